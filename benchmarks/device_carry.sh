#!/usr/bin/env bash
# Build .device/ (git-ignored) for running the SSH-lab benchmarks on a bigger machine that has
# no sshd and no network: this machine's sshd, ssh and ssh-keygen with the shared libraries it links, and wheels for
# Python 3.12 of what the benchmarks need beyond that machine's own packages (and nvidia-ml-py,
# whose copy there has no bytecode: see device_mig_reconfigure.sh). Then, there:
#   bash benchmarks/device_overhead.sh [HOSTS...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rm -rf .device/lib .device/wheels
mkdir -p .device/lib .device/wheels
cp /usr/sbin/sshd /usr/bin/ssh /usr/bin/ssh-keygen .device/lib/
for lib in $(ldd /usr/sbin/sshd /usr/bin/ssh /usr/bin/ssh-keygen | awk '/=>/ {print $3}' | sort -u); do
    case "$(basename "$lib")" in libc.so.*|libresolv.so.*) ;; *) cp -L "$lib" .device/lib/ ;; esac
done
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .device/wheels \
    ansible-core==2.21.5 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12 resolvelib==1.2.1 \
    ansible-runner==2.4.3 pexpect==4.9.0 ptyprocess==0.7.0 python-daemon==3.1.2 lockfile==0.12.2 \
    mlcommons-loadgen==6.0.17 nvidia-ml-py==13.615.71
du -sh .device
