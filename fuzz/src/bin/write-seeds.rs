//! Write every target's seeds into DIR/<target>/ (the corpus the libFuzzer runs start from).

fn main() -> std::io::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/libfuzzer/corpus".into()));
    for (name, _) in hatrunk_fuzz::TARGETS {
        let d = dir.join(name);
        std::fs::create_dir_all(&d)?;
        for (i, s) in hatrunk_fuzz::seeds::seeds(name).iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i:03}")), s)?;
        }
    }
    Ok(())
}
