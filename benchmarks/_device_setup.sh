#!/usr/bin/env bash
# Sourced by the benchmarks/device_*.sh scripts on the bigger machine (see
# benchmarks/device_carry.sh): installs the carried sshd, ssh tools and wheels, and puts that
# machine's own python3 first on PATH. Libraries are copied only where the machine lacks them.
cp --update=none .device/lib/*.so* /usr/lib/x86_64-linux-gnu/ && ldconfig
install -m 0755 .device/lib/sshd /usr/sbin/sshd
for tool in ssh ssh-keygen; do
    command -v "$tool" >/dev/null || install -m 0755 ".device/lib/$tool" "/usr/bin/$tool"
done
getent passwd sshd >/dev/null || useradd -r -d /run/sshd -s /usr/sbin/nologin sshd
mkdir -p /run/sshd
/usr/sbin/sshd -V 2>&1 | head -1 || true
# into that machine's own python3 environment (it is given back afterwards)
py="$(python3 -c 'import sys; print(sys.executable)')"
"$py" -m pip install -q --no-index --no-deps .device/wheels/*.whl
export PATH="$(dirname "$py"):$PATH"
echo "cpus $(nproc); $(python -c 'import ansible, sys; print(sys.version.split()[0], ansible.__version__)'); $(uptime)"
