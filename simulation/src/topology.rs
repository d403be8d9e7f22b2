//! The simulated estate: which nodes exist (name, region, zone, witness), the carrier, the two PBXes
//! and the operator, the node configurations and the trunk file, as PRODUCT.md's layouts have them.

use std::net::IpAddr;

/// SIP port of every node and PBX; gRPC port of every node.
pub const SIP_PORT: u16 = 5060;
pub const CLUSTER_PORT: u16 = 7700;
/// The trunk every scenario calls, and the number it owns.
pub const TRUNK: &str = "acme";
pub const NUMBER: &str = "6561230000";
/// Silence from an account for this long fails the call over (the trunk's failover timer).
pub const FAILOVER_TIMEOUT_MS: u64 = 2000;
/// The trunk's longest call (s): longer than any hold time here, short enough that the slots a
/// restarted node keeps for its earlier calls are due back before a run ends.
pub const MAX_CALL_DURATION_S: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: u64,
    pub name: String,
    pub region: String,
    pub zone: String,
    pub witness: bool,
}

/// A cluster layout and its Advanced HA level.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The Advanced HA level, which is also the layout's name.
    pub ha: &'static str,
    pub nodes: Vec<NodeSpec>,
    /// The order the carrier tries nodes in (its SRV records).
    pub entry: Vec<String>,
}

fn node(id: u64, name: &str, zone: &str, witness: bool) -> NodeSpec {
    let region = zone.rsplit_once('-').map(|(r, _)| r).unwrap_or(zone).to_string();
    NodeSpec { id, name: name.into(), region, zone: zone.into(), witness }
}

impl Layout {
    pub fn named(name: &str) -> Option<Layout> {
        let (ha, nodes, entry): (&'static str, Vec<NodeSpec>, Vec<&str>) = match name {
            "2t" => (
                "2t",
                vec![
                    node(1, "sg1-a1", "sg1-a", false),
                    node(2, "sg1-a2", "sg1-a", false),
                    node(3, "sg1-b1", "sg1-b", false),
                    node(4, "sg1-b2", "sg1-b", false),
                    node(5, "sg1-c-w", "sg1-c", true),
                ],
                vec!["sg1-a1", "sg1-b1", "sg1-a2", "sg1-b2"],
            ),
            "4t" => (
                "4t",
                vec![
                    node(1, "sg1-a1", "sg1-a", false),
                    node(2, "sg1-a2", "sg1-a", false),
                    node(3, "hk1-a1", "hk1-a", false),
                    node(4, "hk1-a2", "hk1-a", false),
                    node(5, "tk1-w", "tk1-a", true),
                ],
                vec!["sg1-a1", "sg1-a2", "hk1-a1", "hk1-a2"],
            ),
            "2t+4t" => (
                "2t+4t",
                vec![
                    node(1, "sg1-a1", "sg1-a", false),
                    node(2, "sg1-a2", "sg1-a", false),
                    node(3, "sg1-b1", "sg1-b", false),
                    node(4, "sg1-b2", "sg1-b", false),
                    node(5, "hk1-a1", "hk1-a", false),
                    node(6, "hk1-a2", "hk1-a", false),
                    node(7, "hk1-b1", "hk1-b", false),
                    node(8, "hk1-b2", "hk1-b", false),
                    node(9, "tk1-w", "tk1-a", true),
                ],
                vec!["sg1-a1", "sg1-b1", "sg1-a2", "sg1-b2", "hk1-a1", "hk1-b1"],
            ),
            _ => return None,
        };
        Some(Layout { ha, nodes, entry: entry.into_iter().map(String::from).collect() })
    }

    pub fn sip_nodes(&self) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.iter().filter(|n| !n.witness)
    }

    pub fn zones(&self) -> Vec<String> {
        let mut z: Vec<String> = self.sip_nodes().map(|n| n.zone.clone()).collect();
        z.dedup();
        z
    }

    pub fn regions(&self) -> Vec<String> {
        let mut r: Vec<String> = self.sip_nodes().map(|n| n.region.clone()).collect();
        r.dedup();
        r
    }

    pub fn by_name(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node whose address is `ip`.
    pub fn by_ip(&self, ip: IpAddr) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| turmoil::lookup(n.name.as_str()) == ip)
    }

    /// The node TOML for `n` (production defaults, except addresses).
    pub fn node_toml(&self, n: &NodeSpec, ip: IpAddr) -> String {
        format!(
            "[node]\nid = {}\nname = \"{}\"\nregion = \"{}\"\nzone = \"{}\"\nrole = \"{}\"\ndata_dir = \"/sim/{}\"\n\
             [sip]\nlisten = [\"udp:{ip}:{SIP_PORT}\", \"tcp:{ip}:{SIP_PORT}\"]\n\
             [cluster]\nlisten = \"{ip}:{CLUSTER_PORT}\"\nbootstrap = false\n[http]\nlisten = \"{ip}:9090\"\n",
            n.id,
            n.name,
            n.region,
            n.zone,
            if n.witness { "witness" } else { "sip" },
            n.name
        )
    }
}

/// The trunk file the operator applies: Auto Fail-over between the two PBXes, the layout's HA level.
pub fn trunk_toml(limit: u32, ha: &str, primary: IpAddr, secondary: IpAddr) -> String {
    let primary_region = if ha.contains("4t") { "primary_region = \"sg1\"\n" } else { "" };
    format!(
        "id = \"{TRUNK}\"\nnumbers = [\"{NUMBER}\"]\nmax_concurrent_calls = {limit}\nmode = \"auto-failover\"\nadvanced_ha = \"{ha}\"\n{primary_region}\
         failover_policy = \"current\"\nfailover_timeout_ms = {FAILOVER_TIMEOUT_MS}\nmax_call_duration_s = {MAX_CALL_DURATION_S}\n\
         [primary]\nlabel = \"HQ PBX\"\nauth = \"ip\"\ntarget = \"sip:{primary}:{SIP_PORT}\"\ntransport = \"udp\"\nallowed_ips = [\"{primary}/32\"]\n\
         [secondary]\nlabel = \"DR PBX\"\nauth = \"ip\"\ntarget = \"sip:{secondary}:{SIP_PORT}\"\ntransport = \"udp\"\nallowed_ips = [\"{secondary}/32\"]\n"
    )
}

/// A small extra trunk: the operator's configuration changes that must never be lost once acknowledged.
pub fn revision_toml(n: u32) -> String {
    format!(
        "id = \"cfg-{n}\"\nnumbers = [\"7000{n:06}\"]\nmax_concurrent_calls = 1\nmode = \"only-primary\"\n\
         [primary]\nlabel = \"rev {n}\"\nauth = \"ip\"\ntarget = \"sip:192.0.2.1:5060\"\ntransport = \"udp\"\nallowed_ips = [\"192.0.2.1/32\"]\n"
    )
}
