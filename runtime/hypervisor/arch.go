package hypervisor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
)

// Guest architectures, named as GOARCH names them.
const (
	ArchAMD64 = "amd64"
	ArchARM64 = "arm64"
)

// KernelArch says which architecture a guest kernel is built for, from its
// header: an ELF vmlinux (x86_64 or aarch64), an x86 bzImage, or an arm64
// Image. A backend uses it to pick its machine, or to refuse a kernel the
// host cannot run, before the VMM fails with a less helpful message.
func KernelArch(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// The x86 boot protocol's "HdrS" is at 0x202, the furthest field read.
	hdr := make([]byte, 0x206)
	n, err := io.ReadFull(f, hdr)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading kernel %s: %w", path, err)
	}
	hdr = hdr[:n]
	const (
		emX8664   = 62
		emAArch64 = 183
	)
	switch {
	case len(hdr) >= 20 && bytes.HasPrefix(hdr, []byte("\x7fELF")):
		machine := binary.LittleEndian.Uint16(hdr[18:20])
		if hdr[5] == 2 { // big-endian ELF
			machine = binary.BigEndian.Uint16(hdr[18:20])
		}
		switch machine {
		case emX8664:
			return ArchAMD64, nil
		case emAArch64:
			return ArchARM64, nil
		}
		return "", fmt.Errorf("kernel %s: ELF machine %d is neither x86_64 nor aarch64: %w", path, machine, errdefs.ErrInvalidArgument)
	case len(hdr) >= 0x3c && string(hdr[0x38:0x3c]) == "ARM\x64":
		return ArchARM64, nil
	case len(hdr) >= 0x206 && string(hdr[0x202:0x206]) == "HdrS":
		return ArchAMD64, nil
	}
	return "", fmt.Errorf("kernel %s: not a vmlinux, bzImage or arm64 Image (compressed?): %w", path, errdefs.ErrInvalidArgument)
}
