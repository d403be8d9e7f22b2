#!/usr/bin/env python3
"""RFC 4475 torture messages against a real hatrunk node, over UDP and TCP.

Run inside a network namespace that has only loopback (tests/e2e_torture.rs does that), because the
messages' Via headers name documentation addresses. Usage: torture.py HATRUNK_BIN SHARED_DIR WORKDIR
Exits non-zero with a list of what went wrong.
"""
import os, socket, subprocess, sys, time

hatrunk, shared, work = sys.argv[1], sys.argv[2], sys.argv[3]
torture = os.path.join(shared, "sip-torture")
PORT = 35060

VALID = "wsinv intmeth esc01 escnull esc02 lwsdisp longreq dblreq semiuri transports mpart01 unreason noreason badbranch inv2543".split()
INVALID = ("badinv01 clerr ncl scalar02 scalarlg quotbal ltgtruri lwsruri lwsstart trws escruri baddate regbadct "
           "badaspec baddn badvers mismatch01 mismatch02 bigcode").split()
# section 3.3: the specific code RFC 4475 names, where it names one we owe as a proxy/registrar
SPECIFIC = {"insuf": {400}, "unkscm": {416}, "unksm2": {416}, "bext01": {420}, "multi01": {400}, "mcl01": {400},
            "badvers": {505}, "zeromf": {200, 483},
            # REGISTERs: challenged (401), or refused (403) when no Digest account exists at all
            "regaut01": {401, 403}, "cparam01": {401, 403}, "cparam02": {401, 403}, "regescrt": {400, 401, 403}}

cfg = os.path.join(work, "node.toml")
with open(cfg, "w") as f:
    f.write(f'[node]\ndata_dir = "{work}/data"\n[sip]\nlisten = ["udp:127.0.0.1:{PORT}", "tcp:127.0.0.1:{PORT}"]\n'
            f'[cluster]\nlisten = "127.0.0.1:{PORT+1}"\n[http]\nlisten = "127.0.0.1:{PORT+2}"\n')
log = open(os.path.join(work, "node.log"), "w")
node = subprocess.Popen([hatrunk, "run", "--config", cfg], stdout=log, stderr=log)
problems = []

def wait_up():
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", PORT + 1), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("node did not start")

def code_of(data):
    if not data.startswith(b"SIP/2.0 "):
        return None
    try:
        return int(data.split(b" ")[1])
    except (ValueError, IndexError):
        return None

def udp(payload, wait=1.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(wait)
    s.sendto(payload, ("127.0.0.1", PORT))
    codes = []
    try:
        while True:
            data, _ = s.recvfrom(65535)
            c = code_of(data)
            if c and c != 100:
                codes.append(c)
                break
    except socket.timeout:
        pass
    s.close()
    return codes

def tcp(payload):
    s = socket.create_connection(("127.0.0.1", PORT), timeout=1.0)
    try:
        s.sendall(payload)
        s.recv(65535)
    except OSError:
        pass
    s.close()

def options_ok(tag):
    """The node answers OPTIONS: like a UDP client, retransmit (each try a new transaction, since a
    retransmission of the same one would be answered to the first, closed socket) for up to 15 s."""
    start = time.time()
    for attempt in range(15):
        t = f"{tag}{attempt}"
        msg = (f"OPTIONS sip:127.0.0.1:{PORT} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK{t}\r\n"
               f"From: <sip:check@127.0.0.1>;tag={t}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: {t}\r\nCSeq: 1 OPTIONS\r\n"
               "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
        if udp(msg, 1.0) == [200]:
            if attempt > 0:
                print(f"note: OPTIONS after {tag} answered only after {time.time() - start:.1f} s", file=sys.stderr)
            return True
    return False

wait_up()
for name in sorted(n[:-4] for n in os.listdir(torture) if n.endswith(".dat")):
    payload = open(os.path.join(torture, name + ".dat"), "rb").read()
    is_response = payload.startswith(b"SIP/")
    codes = udp(payload)
    if name in SPECIFIC:
        if not codes or codes[0] not in SPECIFIC[name]:
            problems.append(f"{name}: expected {sorted(SPECIFIC[name])}, got {codes}")
    elif name in INVALID:
        if is_response:
            if codes:
                problems.append(f"{name}: a malformed response must be dropped, got {codes}")
        elif codes != [400]:
            problems.append(f"{name}: invalid, expected 400, got {codes}")
    elif name in VALID and not is_response:
        if not codes or codes[0] == 400:
            problems.append(f"{name}: valid, must be answered without 400, got {codes}")
    tcp(payload)
    if node.poll() is not None:
        problems.append(f"{name}: the node died")
        break
    if not options_ok(f"chk{name}"):
        problems.append(f"{name}: the node no longer answers OPTIONS")

node.terminate()
node.wait(timeout=10)
if problems:
    print("\n".join(problems))
    sys.exit(1)
print("torture: all messages handled; node answered OPTIONS after each")
