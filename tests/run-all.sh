#!/usr/bin/env bash
# The project's test command (see README.md): formatting, lints, every test on the host
# target, the agent's unit tests on the musl target, the static agent binary checks, and
# the VM lab's end-to-end cycle (its timing table is printed).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "static agent binary (release, musl)"
cargo build --release --locked --target x86_64-unknown-linux-musl -p ferric-agent
bin=target/x86_64-unknown-linux-musl/release/ferric-agent
file "$bin"
file "$bin" | grep -Eq 'static(ally|-pie) linked' || { echo "ferric-agent is not statically linked"; exit 1; }
if ldd "$bin" 2>&1 | grep -vq 'not a dynamic executable\|statically linked'; then
  echo "ldd reports dynamic dependencies:"; ldd "$bin"; exit 1
fi
size=$(stat -c %s "$bin")
echo "ferric-agent: $size bytes"
[ "$size" -le $((8 * 1024 * 1024)) ] || { echo "ferric-agent is larger than 8 MiB"; exit 1; }

step "agent unit tests on musl"
cargo test --locked --target x86_64-unknown-linux-musl -p ferric-agent --lib

step "real peers (python-ironicclient's baremetal CLI)"
bash tests/peers/setup-venv.sh target/baremetal-venv

step "all tests (host target)"
export FERRIC_AGENT_BIN="$PWD/$bin"
e2e=a_server_is_cleaned_deployed_boots_its_disk_and_is_cleaned_again
cargo test --workspace --locked -- --skip "$e2e"

step "end to end in the VM lab: PXE, cleaning, qcow2 deploy, disk boot, cleaning"
cargo test --workspace --locked --test vm_lab -- --nocapture "$e2e"
