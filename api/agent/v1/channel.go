package agent

import "encoding/binary"

// How host and agent find each other. On Linux without vhost-vsock the
// channel is a virtio-serial port; elsewhere it is AF_VSOCK.
const (
	// PortName is the name of the agent's virtio-serial port.
	PortName = "vzrun.agent"
	// VsockPort is the AF_VSOCK port the agent listens on.
	VsockPort = 1024
	// Hello is the line the agent writes on a virtio-serial port once it
	// has opened the port: before it, the host must not send (the guest
	// would drop it), after it the port carries ttrpc.
	Hello = "VZRUN-AGENT-READY\n"
	// TemplateBootArg is on the kernel command line of a VM booted to be
	// saved as a template: its agent lets the guest's clock settle
	// before it greets the host.
	TemplateBootArg = "vzrun.template=1"
)

// Between two ttrpc messages the agent may send sideband frames on a
// virtio-serial channel: SidebandFrame, the data's length (u32, little
// endian), the tag of the ReadStdio request that asked for it (u64, little
// endian), then the data, ahead of that request's response. A ttrpc
// message starts with its length, big-endian and at most 4 MiB, so with a
// 0 byte: a reader tells the two apart by the first byte.
const (
	SidebandFrame = 0xf1
	// SidebandHeaderLen is the length of a sideband frame's header.
	SidebandHeaderLen = 13
	// TTRPCHeaderLen is the length of a ttrpc message's header, whose
	// first four bytes are the payload's length, big-endian.
	TTRPCHeaderLen = 10
)

// PutSidebandHeader writes a sideband frame's header into b.
func PutSidebandHeader(b *[SidebandHeaderLen]byte, n int, tag uint64) {
	b[0] = SidebandFrame
	binary.LittleEndian.PutUint32(b[1:], uint32(n))
	binary.LittleEndian.PutUint64(b[5:], tag)
}

// ParseSidebandHeader returns a sideband frame's length and tag.
func ParseSidebandHeader(b *[SidebandHeaderLen]byte) (n int, tag uint64) {
	return int(binary.LittleEndian.Uint32(b[1:5])), binary.LittleEndian.Uint64(b[5:])
}
