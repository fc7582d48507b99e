#!/usr/bin/env bash
# Installs the Debian packages the tests and the VM lab demo need, only those missing.
# Idempotent; run as root. Used by .ci/run and ./ferric-demo.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
need_apt=()
command -v musl-gcc >/dev/null 2>&1 || need_apt+=(musl-tools)
command -v file >/dev/null 2>&1 || need_apt+=(file)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# Real peers of the image path: image tools to make and compare images, partition-table
# tools to verify what the agent writes, ISO tools to read config drives.
command -v qemu-img >/dev/null 2>&1 || need_apt+=(qemu-utils)
command -v sfdisk >/dev/null 2>&1 || need_apt+=(fdisk)
command -v sgdisk >/dev/null 2>&1 || need_apt+=(gdisk)
command -v isoinfo >/dev/null 2>&1 || need_apt+=(genisoimage)
command -v xz >/dev/null 2>&1 || need_apt+=(xz-utils)
command -v zstd >/dev/null 2>&1 || need_apt+=(zstd)
command -v blkid >/dev/null 2>&1 || need_apt+=(util-linux)
# Real signatures for the metadata erase to remove, made by the tools that make them.
command -v mkfs.xfs >/dev/null 2>&1 || need_apt+=(xfsprogs)
command -v mkfs.vfat >/dev/null 2>&1 || need_apt+=(dosfstools)
command -v mkfs.btrfs >/dev/null 2>&1 || need_apt+=(btrfs-progs)
command -v pvcreate >/dev/null 2>&1 || need_apt+=(lvm2)
command -v mdadm >/dev/null 2>&1 || need_apt+=(mdadm)
command -v cryptsetup >/dev/null 2>&1 || need_apt+=(cryptsetup-bin)
command -v make-bcache >/dev/null 2>&1 || need_apt+=(bcache-tools)
command -v mkfs.ext4 >/dev/null 2>&1 || need_apt+=(e2fsprogs)
# Real BMC peers: OpenIPMI's simulator (also the VM lab's BMC) and ipmitool (sushy-tools
# and pyghmi come from PyPI into venvs the tests create).
command -v ipmi_sim >/dev/null 2>&1 || need_apt+=(openipmi)
command -v ipmitool >/dev/null 2>&1 || need_apt+=(ipmitool)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The deploy ramdisk builder (image-elements/build): packing, module indexes, the ISO.
command -v cpio >/dev/null 2>&1 || need_apt+=(cpio)
command -v depmod >/dev/null 2>&1 || need_apt+=(kmod)
command -v xorriso >/dev/null 2>&1 || need_apt+=(xorriso)
command -v mformat >/dev/null 2>&1 || need_apt+=(mtools)
command -v grub-mkrescue >/dev/null 2>&1 || need_apt+=(grub-common)
[ -d /usr/lib/grub/i386-pc ] || need_apt+=(grub-pc-bin)
[ -d /usr/lib/grub/x86_64-efi ] || need_apt+=(grub-efi-amd64-bin)
# The VM lab: QEMU itself is unpacked from its packages by the lab (see
# tests/src/qemu.rs); socat carries the guest's connections to the conductor; syslinux
# makes the bootable whole-disk image the lab deploys.
command -v socat >/dev/null 2>&1 || need_apt+=(socat)
command -v syslinux >/dev/null 2>&1 || need_apt+=(syslinux)
[ -f /usr/lib/syslinux/mbr/mbr.bin ] || need_apt+=(syslinux-common)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
elif ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
  # The ramdisk builder and the VM lab download packages with apt-get download.
  apt-get update -qq
fi
