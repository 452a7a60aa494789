package agent

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
)
