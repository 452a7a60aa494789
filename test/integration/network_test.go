package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// cniNerdctl is nerdctl with the pinned CNI plugins (make test-deps) and a
// private network config directory: its default bridge network is what
// `nerdctl run` gives a container without --network.
type cniNerdctl struct {
	*nerdctl
	flags []string
}

func startCNINerdctl(t *testing.T) (*cniNerdctl, string) {
	t.Helper()
	n, img := startNerdctl(t)
	cniPath := pinnedDir(t, "CNI_BIN", "cni-plugins-v1.9.1")
	if _, err := os.Stat(filepath.Join(cniPath, "bridge")); err != nil {
		t.Fatalf("CNI plugins missing (make test-deps): %v", err)
	}
	// The default network's bridge is made by the first container on it;
	// it goes once containerd is gone (cleanups run last first), or the
	// next test's nerdctl finds its subnet taken.
	if len(linksNamed("nerdctl0")) == 0 {
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", "nerdctl0").Run() })
	}
	conf := filepath.Join(n.c.dir, "cni", "net.d")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	return &cniNerdctl{nerdctl: n, flags: []string{"--cni-path", cniPath, "--cni-netconfpath", conf}}, img
}

func (n *cniNerdctl) run(stdin string, args ...string) (string, string, int) {
	n.c.t.Helper()
	return n.nerdctl.run(stdin, append(append([]string{}, n.flags...), args...)...)
}

func (n *cniNerdctl) ok(args ...string) string {
	n.c.t.Helper()
	out, errs, code := n.run("", args...)
	if code != 0 {
		n.c.t.Fatalf("nerdctl %v: exit %d: %s%s\ncontainerd log:\n%s", args, code, out, errs, containerdLogTail(n.c))
	}
	return out
}

// ip is the container's address on the default network.
func (n *cniNerdctl) ip(name string) string {
	n.c.t.Helper()
	ip := strings.TrimSpace(n.ok("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name))
	if net.ParseIP(ip) == nil {
		n.c.t.Fatalf("container %s has no address: %q", name, ip)
	}
	return ip
}

var vzOnBridge = []string{"--runtime", "io.containerd.vz.v2"}

// httpGet fetches / from addr, retrying while the server comes up.
func httpGet(t *testing.T, addr string) string {
	t.Helper()
	var last error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			last = err
			continue
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
		b, err := io.ReadAll(bufio.NewReader(c))
		c.Close()
		if err != nil || len(b) == 0 {
			last = fmt.Errorf("read: %v (%d bytes)", err, len(b))
			continue
		}
		return string(b)
	}
	t.Fatalf("GET http://%s/: %v", addr, last)
	return ""
}

// netnsOf is the inode of a process's network namespace.
func netnsOf(t *testing.T, pid string) string {
	t.Helper()
	l, err := os.Readlink("/proc/" + pid + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// netnsInUse says whether any process is in the network namespace ns.
func netnsInUse(ns string) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && l == ns {
			return true
		}
	}
	return false
}

const httpdScript = `mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && exec httpd -f -p 80 -h /www`

func TestNetworkPublishedPort(t *testing.T) {
	n, img := startCNINerdctl(t)
	name := "web-" + uniqueID(t)
	port := 18000 + os.Getpid()%1000
	n.ok(append(append([]string{"run", "-d", "--name", name, "--hostname", "vzweb", "-p", fmt.Sprintf("%d:80", port)}, vzOnBridge...), img, "sh", "-c", httpdScript)...)
	pid := strings.TrimSpace(n.ok("inspect", "-f", "{{.State.Pid}}", name))
	ns := netnsOf(t, pid)
	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", port), n.ip(name) + ":80"} {
		if got := httpGet(t, addr); !strings.Contains(got, "hello from vzweb") {
			t.Errorf("GET %s: %q", addr, got)
		}
	}
	// The guest runs its own kernel: the container is in the VM.
	if out := n.ok("exec", name, "uname", "-r"); !strings.Contains(out, "vzrun") {
		t.Errorf("uname -r in the container: %q, want the guest kernel", out)
	}
	// The VM's tap and the redirects between it and the container's
	// interface live in the container's namespace (never the host's).
	for _, c := range [][]string{{"ip", "-o", "link", "show", "vztap0"}, {"tc", "filter", "show", "dev", "eth0", "ingress"}, {"tc", "filter", "show", "dev", "vztap0", "ingress"}} {
		out, err := exec.Command("nsenter", append([]string{"-t", pid, "-n"}, c...)...).CombinedOutput()
		if err != nil || len(out) == 0 || (c[0] == "tc" && !strings.Contains(string(out), "mirred")) {
			t.Errorf("in the container's netns, %s: %v: %q", strings.Join(c, " "), err, out)
		}
	}
	n.ok("rm", "-f", name)
	// The container's namespace, and with it the tap and the redirects,
	// is gone; nerdctl's poststop hook released the veth on the bridge.
	waitFor(t, 30*time.Second, func() bool { return !netnsInUse(ns) })
	if ports, _ := os.ReadDir("/sys/class/net/nerdctl0/brif"); len(ports) > 0 {
		t.Errorf("veths left on the bridge: %d", len(ports))
	}
}

func TestNetworkContainersReachEachOther(t *testing.T) {
	n, img := startCNINerdctl(t)
	server, client := "srv-"+uniqueID(t), "cli-"+uniqueID(t)
	n.ok(append(append([]string{"run", "-d", "--name", server, "--hostname", "vzsrv"}, vzOnBridge...), img, "sh", "-c", httpdScript)...)
	ip := n.ip(server)
	// The client fetches the page over the bridge, VM to VM.
	script := fmt.Sprintf(`for i in $(seq 1 60); do (printf 'GET / HTTP/1.0\r\n\r\n'; sleep 3) | nc %s 80 | grep hello && exit 0; sleep 1; done; exit 1`, ip)
	out := n.ok(append(append([]string{"run", "--rm", "--name", client}, vzOnBridge...), img, "sh", "-c", script)...)
	if !strings.Contains(out, "hello from vzsrv") {
		t.Errorf("client got %q from %s", out, ip)
	}
	// And the other way: the server's container reaches the bridge's
	// gateway (the host) through its default route.
	routes := n.ok("exec", server, "ip", "route")
	var gw string
	for _, l := range strings.Split(routes, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "default" && f[1] == "via" {
			gw = f[2]
		}
	}
	if gw == "" {
		t.Fatalf("no default route in the container:\n%s", routes)
	}
	if out, errs, code := n.run("", "exec", server, "ping", "-c", "1", "-W", "10", gw); code != 0 {
		t.Errorf("the server's container does not reach its gateway %s: %s%s", gw, out, errs)
	}
	addrs := n.ok("exec", server, "ip", "-o", "-4", "addr", "show", "eth0")
	if !strings.Contains(addrs, ip+"/") {
		t.Errorf("eth0 in the container lacks %s:\n%s", ip, addrs)
	}
	n.ok("rm", "-f", server)
}

func TestNetworkDNSConfig(t *testing.T) {
	n, img := startCNINerdctl(t)
	out := n.ok(append(append([]string{"run", "--rm", "--dns", "192.0.2.53", "--add-host", "vzpeer:192.0.2.7"}, vzOnBridge...), img,
		"sh", "-c", "cat /etc/resolv.conf /etc/hosts")...)
	for _, want := range []string{"nameserver 192.0.2.53", "192.0.2.7", "vzpeer"} {
		if !strings.Contains(out, want) {
			t.Errorf("%q missing from the guest's resolv.conf/hosts:\n%s", want, out)
		}
	}
}

// --network container:NAME asks for another container's network
// namespace, which holds that container's VM NIC: refused with an error
// that says so, and nothing left behind.
func TestNetworkContainerModeRefused(t *testing.T) {
	n, img := startCNINerdctl(t)
	first := "netfirst-" + uniqueID(t)
	n.ok(append(append([]string{"run", "-d", "--name", first}, vzOnBridge...), img, "sleep", "1000")...)
	_, errs, code := n.run("", "run", "--rm", "--runtime", "io.containerd.vz.v2", "--network", "container:"+first, img, "true")
	if code == 0 || !strings.Contains(errs, "cannot share another container's network namespace") {
		t.Errorf("--network container:: exit %d, stderr %q", code, errs)
	}
	n.ok("rm", "-f", first)
}

func TestNetworkNoneIsLoopbackOnly(t *testing.T) {
	n, img := startCNINerdctl(t)
	// Every link, with an address or not (the VM's NIC would be eth0).
	out := n.ok(append(append([]string{"run", "--rm"}, vzRuntime...), img, "ip", "-o", "link")...)
	var ifaces []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			ifaces = append(ifaces, strings.TrimSuffix(f[1], ":"))
		}
	}
	for _, i := range ifaces {
		if i != "lo" {
			t.Errorf("--network none: the container has interface %s:\n%s", i, out)
		}
	}
	if len(ifaces) == 0 {
		t.Errorf("--network none: not even loopback:\n%s", out)
	}
}

// linksNamed lists the host's network interfaces whose name starts with
// prefix.
func linksNamed(prefix string) []string {
	ents, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func containerdLogTail(c *ctrd) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "level=error") || strings.Contains(l, "level=warn") {
			keep = append(keep, l)
		}
	}
	return lastN(strings.Join(keep, "\n"), 20)
}

// hostNetNS is a network namespace made the way CRI or BuildKit make one
// before they call the runtime: a veth pair, one end in the namespace
// with an address and a default route, the other on the host.
type hostNetNS struct {
	name, path, hostIf string
	hostIP, nsIP       string
}

func newHostNetNS(t *testing.T) *hostNetNS {
	t.Helper()
	n := os.Getpid()%200 + 20
	h := &hostNetNS{
		name: fmt.Sprintf("vzt%d", os.Getpid()), hostIf: fmt.Sprintf("vzh%d", os.Getpid()),
		hostIP: fmt.Sprintf("10.213.%d.1", n), nsIP: fmt.Sprintf("10.213.%d.2", n),
	}
	h.path = "/var/run/netns/" + h.name
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	sh("ip", "netns", "add", h.name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", h.name).Run()
		_ = exec.Command("ip", "link", "del", h.hostIf).Run()
	})
	sh("ip", "link", "add", h.hostIf, "type", "veth", "peer", "name", "eth0", "netns", h.name)
	sh("ip", "addr", "add", h.hostIP+"/24", "dev", h.hostIf)
	sh("ip", "link", "set", h.hostIf, "up")
	sh("ip", "-n", h.name, "link", "set", "eth0", "mtu", "1400")
	sh("ip", "-n", h.name, "addr", "add", h.nsIP+"/24", "dev", "eth0")
	sh("ip", "-n", h.name, "link", "set", "eth0", "up")
	sh("ip", "-n", h.name, "route", "add", "default", "via", h.hostIP)
	return h
}

func (h *hostNetNS) tc(t *testing.T) string {
	out, _ := exec.Command("ip", "netns", "exec", h.name, "tc", "qdisc", "show", "dev", "eth0").CombinedOutput()
	return string(out)
}

func (h *hostNetNS) links(t *testing.T) string {
	out, _ := exec.Command("ip", "-n", h.name, "-o", "link").CombinedOutput()
	return string(out)
}

// A namespace given by path (CRI, BuildKit) is joined as it is, and what
// vzrun adds to it goes on delete, also after kill -9 of the monitor.
func TestNetworkNamespacePath(t *testing.T) {
	v := newVZ(t)
	h := newHostNetNS(t)
	b := newBundle(t, "sh", "-c", "ip -o link show eth0; ip -o addr show eth0; ip route; exec httpd -f -p 8080 -h /www")
	b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: h.path})
	b.save(t)
	if err := os.MkdirAll(filepath.Join(b.rootfs(), "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(b.rootfs(), "www", "index.html"), "hello over the veth\n")
	id := uniqueID(t)
	out := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd := v.cmd("run", "--detach", "--bundle", b.Dir, id)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out)
		t.Fatalf("vzrun run --detach: %v: %s", err, b)
	}
	f.Close()
	if got := httpGet(t, h.nsIP+":8080"); !strings.Contains(got, "hello over the veth") {
		t.Errorf("GET from the host: %q", got)
	}
	said, _ := os.ReadFile(out)
	for _, want := range []string{h.nsIP + "/24", "mtu 1400", "default via " + h.hostIP} {
		if !strings.Contains(string(said), want) {
			t.Errorf("guest network lacks %q:\n%s", want, said)
		}
	}
	if tc := h.tc(t); !strings.Contains(tc, "ingress") {
		t.Errorf("no redirect on the namespace's eth0:\n%s", tc)
	}
	// kill -9 of the monitor: delete still removes the redirect.
	var st struct{ Pid int }
	if err := json.Unmarshal([]byte(v.runOK("state", id).stdout), &st); err != nil || st.Pid <= 0 {
		t.Fatalf("state: %v %+v", err, st)
	}
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(v.runOK("state", id).stdout, `"stopped"`) })
	v.runOK("delete", id)
	if tc := h.tc(t); strings.Contains(tc, "ingress") {
		t.Errorf("redirect left on the namespace's eth0:\n%s", tc)
	}
	waitFor(t, 10*time.Second, func() bool { return !strings.Contains(h.links(t), "vztap") })
}

// A hook that wires the container's new network namespace the way CNI
// does, through state.pid (/proc/PID/ns/net), finds the VM's namespace
// whether vzrun runs in the foreground or detached, and the guest gets
// what the hook put there; the hook itself runs in the host's namespace.
func TestNetworkHookFillsNewNamespace(t *testing.T) {
	for _, detach := range []bool{false, true} {
		t.Run(map[bool]string{false: "foreground", true: "detached"}[detach], func(t *testing.T) {
			v := newVZ(t)
			hostIf := fmt.Sprintf("vzk%d%v", os.Getpid()%10000, map[bool]int{false: 0, true: 1}[detach])
			hookOut := filepath.Join(t.TempDir(), "hook")
			script := fmt.Sprintf(`set -e
pid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
readlink /proc/self/ns/net > %[2]s.ns
ip link add %[1]s type veth peer name eth0 netns "$pid"
nsenter -t "$pid" -n ip addr add 10.215.7.2/24 dev eth0
nsenter -t "$pid" -n ip link set eth0 mtu 1450 up
`, hostIf, hookOut)
			b := newBundle(t, "sh", "-c", "ip -o link show eth0; ip -o addr show eth0")
			b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
			b.Spec.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", script}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}}}
			b.save(t)
			t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostIf).Run() })
			id := uniqueID(t)
			var out string
			if detach {
				f := filepath.Join(t.TempDir(), "out")
				fh, err := os.Create(f)
				if err != nil {
					t.Fatal(err)
				}
				cmd := v.cmd("run", "--detach", "--bundle", b.Dir, id)
				cmd.Stdout, cmd.Stderr = fh, fh
				if err := cmd.Run(); err != nil {
					b, _ := os.ReadFile(f)
					t.Fatalf("run --detach: %v: %s", err, b)
				}
				waitFor(t, 30*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
				v.runOK("delete", id)
				b, _ := os.ReadFile(f)
				out = string(b)
			} else {
				out = v.runOK("run", "--bundle", b.Dir, id).stdout
			}
			for _, want := range []string{"mtu 1450", "10.215.7.2/24"} {
				if !strings.Contains(out, want) {
					t.Errorf("guest eth0 lacks %q:\n%s", want, out)
				}
			}
			self, _ := os.Readlink("/proc/self/ns/net")
			if ns, _ := os.ReadFile(hookOut + ".ns"); strings.TrimSpace(string(ns)) != self {
				t.Errorf("hook ran in network namespace %s, want the host's %s", ns, self)
			}
			// The namespace went with the container, and the veth with it.
			waitFor(t, 10*time.Second, func() bool { return len(linksNamed(hostIf)) == 0 })
		})
	}
}

// io.vzrun.publish publishes a port without any CNI network: the owner
// listens on the host and relays through the agent, from a VM with a
// network namespace of its own (loopback only) and from one without.
func TestNetworkPublishAnnotation(t *testing.T) {
	for i, netns := range []bool{true, false} {
		t.Run(map[bool]string{true: "own-netns", false: "no-netns"}[netns], func(t *testing.T) {
			v := newVZ(t)
			port := 19000 + os.Getpid()%500*2 + i
			b := newBundle(t, "sh", "-c", "echo published > /www/index.html; exec httpd -f -p 8080 -h /www")
			if netns {
				b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
			}
			if err := os.MkdirAll(filepath.Join(b.rootfs(), "www"), 0o755); err != nil {
				t.Fatal(err)
			}
			b.annotate(t, "io.vzrun.publish", fmt.Sprintf("127.0.0.1:%d:8080", port))
			id := uniqueID(t)
			v.detach("run", "--detach", "--bundle", b.Dir, id)
			defer v.run("", "delete", "--force", id)
			if got := httpGet(t, fmt.Sprintf("127.0.0.1:%d", port)); !strings.Contains(got, "published") {
				t.Errorf("GET through the published port: %q", got)
			}
			v.runOK("delete", "--force", id)
			if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
				c.Close()
				t.Errorf("port %d still open after delete", port)
			}
		})
	}
	// A bad annotation is an error before any VM boots.
	v := newVZ(t)
	b := newBundle(t, "true")
	b.annotate(t, "io.vzrun.publish", "80:udp")
	if r := v.run("", "run", "--bundle", b.Dir, uniqueID(t)); r.code == 0 || !strings.Contains(r.stderr, "io.vzrun.publish") {
		t.Errorf("bad io.vzrun.publish: exit %d, %q", r.code, r.stderr)
	}
}

// A spec without a network namespace asks for the host's network, which a
// VM cannot share: it gets a NAT (QEMU's user networking) configured by
// DHCP, and reaches the host's services as runc's container would.
func TestNetworkHostNetworkIsNAT(t *testing.T) {
	for _, dhcp := range []bool{false, true} {
		t.Run(map[bool]string{false: "static", true: "dhcp"}[dhcp], func(t *testing.T) {
			if dhcp {
				// As on macOS, where the NAT's network is not known.
				t.Setenv("VZRUN_NAT_DHCP", "1")
			}
			testHostNetworkIsNAT(t, dhcp)
		})
	}
}

func testHostNetworkIsNAT(t *testing.T, dhcp bool) {
	v := newVZ(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 64)
		n, _ := c.Read(b)
		got <- string(b[:n])
	}()
	port := l.Addr().(*net.TCPAddr).Port
	// 10.0.2.2 is the host as QEMU's user networking shows it.
	b := newBundle(t, "sh", "-c", fmt.Sprintf("ip -o -4 addr show eth0; ip route; echo from-the-vm | nc 10.0.2.2 %d", port))
	out := v.runOK("run", "--bundle", b.Dir, uniqueID(t)).stdout
	if !strings.Contains(out, "eth0") || !strings.Contains(out, "default via") {
		t.Errorf("no configured eth0 in the guest:\n%s", out)
	}
	// A lease has a lifetime (QEMU's: a day), the static setup none.
	if leased := !strings.Contains(out, "valid_lft forever"); leased != dhcp {
		t.Errorf("dhcp %v, but eth0's address says:\n%s", dhcp, out)
	}
	select {
	case s := <-got:
		if !strings.Contains(s, "from-the-vm") {
			t.Errorf("host service got %q", s)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("the container did not reach the host's service:\n%s", out)
	}
}

// A namespace given by path with the routes CNI plugins other than the
// bridge make: a /32 address whose gateway has a scope-link route of its
// own (Cilium, Calico), two default routes told apart by metric, a route
// to a link-local address (a metadata service), and sysctls set (CNI's
// tuning plugin). The guest gets them all; the spec's sysctls win.
// While a process is in the namespace it is another container's, and
// vzrun refuses it rather than take its traffic.
func TestNetworkNamespacePathRoutes(t *testing.T) {
	v := newVZ(t)
	n := os.Getpid()%200 + 20
	name, hostIf := fmt.Sprintf("vzr%d", os.Getpid()), fmt.Sprintf("vzq%d", os.Getpid())
	gw, gw2, addr := fmt.Sprintf("10.214.%d.1", n), fmt.Sprintf("10.214.%d.3", n), fmt.Sprintf("10.214.%d.2", n)
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	sh("ip", "netns", "add", name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", name).Run()
		_ = exec.Command("ip", "link", "del", hostIf).Run()
	})
	sh("ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", name)
	sh("ip", "addr", "add", gw+"/32", "dev", hostIf)
	sh("ip", "link", "set", hostIf, "up")
	sh("ip", "route", "add", addr+"/32", "dev", hostIf)
	sh("ip", "-n", name, "addr", "add", addr+"/32", "dev", "eth0")
	sh("ip", "-n", name, "link", "set", "eth0", "up")
	sh("ip", "-n", name, "route", "add", gw, "dev", "eth0", "scope", "link")
	sh("ip", "-n", name, "route", "add", gw2, "dev", "eth0", "scope", "link")
	sh("ip", "-n", name, "route", "add", "default", "via", gw, "metric", "100")
	sh("ip", "-n", name, "route", "add", "default", "via", gw2, "metric", "200")
	sh("ip", "-n", name, "route", "add", "169.254.169.254", "via", gw)
	// Sysctls a CNI tuning plugin would set; the spec's own win.
	sh("ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.core.somaxconn=555", "net.ipv4.conf.eth0.arp_ignore=1", "net.ipv4.tcp_keepalive_time=600")

	b := newBundle(t, "sh", "-c", "ip route; cd /proc/sys/net && echo sysctls $(cat core/somaxconn ipv4/conf/eth0/arp_ignore ipv4/tcp_keepalive_time)")
	b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/var/run/netns/" + name})
	b.Spec.Linux.Sysctl = map[string]string{"net.ipv4.tcp_keepalive_time": "77"}
	b.save(t)

	// A process in the namespace: refused, nothing made.
	holder := exec.Command("ip", "netns", "exec", name, "sleep", "600")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	// ip netns exec enters the namespace before it becomes sleep.
	waitFor(t, 10*time.Second, func() bool {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", holder.Process.Pid))
		return strings.TrimSpace(string(comm)) == "sleep"
	})
	id := uniqueID(t)
	r := v.run("", "run", "--bundle", b.Dir, id)
	_ = holder.Process.Kill()
	_ = holder.Wait()
	if r.code == 0 || !strings.Contains(r.stderr, "is in use by pid "+strconv.Itoa(holder.Process.Pid)+" (sleep)") || !strings.Contains(r.stderr, "cannot share another container's network namespace") {
		t.Errorf("run in a namespace a process is in: exit %d, stderr %q", r.code, r.stderr)
	}
	if out, _ := exec.Command("ip", "-n", name, "-o", "link").CombinedOutput(); strings.Contains(string(out), "vztap") {
		t.Errorf("a refused run left a tap:\n%s", out)
	}

	// No process in it: the guest gets every route.
	r = v.run("", "run", "--bundle", b.Dir, uniqueID(t))
	if r.code != 0 {
		t.Fatalf("run: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"default via " + gw + " dev eth0 metric 100",
		"default via " + gw2 + " dev eth0 metric 200",
		gw + " dev eth0 scope link",
		"169.254.169.254 via " + gw + " dev eth0",
		"sysctls 555 1 77",
	} {
		if !strings.Contains(strings.Join(strings.Fields(r.stdout), " "), want) {
			t.Errorf("guest lacks %q:\n%s", want, r.stdout)
		}
	}
}

// When a container's process ends, its VM stops and its network namespace
// is emptied, as the namespace's end under runc would: the veth leaves the
// bridge though the container (and its shim) stay until nerdctl rm.
func TestNetworkEndedContainerLeavesTheBridge(t *testing.T) {
	n, img := startCNINerdctl(t)
	name := "ended-" + uniqueID(t)
	n.ok(append(append([]string{"run", "-d", "--name", name}, vzOnBridge...), img, "sh", "-c", "sleep 2")...)
	bridgePorts := func() int { ports, _ := os.ReadDir("/sys/class/net/nerdctl0/brif"); return len(ports) }
	if bridgePorts() != 1 {
		t.Errorf("bridge ports while the container runs: %d, want 1", bridgePorts())
	}
	waitFor(t, 60*time.Second, func() bool {
		return strings.TrimSpace(n.ok("inspect", "-f", "{{.State.Status}}", name)) == "exited"
	})
	waitFor(t, 10*time.Second, func() bool { return bridgePorts() == 0 })
	n.ok("rm", "-f", name)
}

// A container on two networks gets a NIC on each, as under runc it gets
// eth0 and eth1: both addresses answer from the host, each through its
// own bridge, and both interfaces are in the container.
func TestNetworkTwoNetworks(t *testing.T) {
	n, img := startCNINerdctl(t)
	before := linksNamed("br-")
	nets := map[string]string{"vzn1-" + uniqueID(t): "10.231.1", "vzn2-" + uniqueID(t): "10.231.2"}
	var names []string
	for name, prefix := range nets {
		n.ok("network", "create", "--subnet", prefix+".0/24", name)
		names = append(names, name)
	}
	t.Cleanup(func() {
		for _, l := range linksNamed("br-") {
			if !slices.Contains(before, l) {
				_ = exec.Command("ip", "link", "del", l).Run()
			}
		}
	})
	name := "twonet-" + uniqueID(t)
	// A spec sysctl of the second interface, set under runc after the
	// hooks made it.
	args := []string{"run", "-d", "--name", name, "--sysctl", "net.ipv4.conf.eth1.arp_ignore=2"}
	for _, nw := range names {
		args = append(args, "--network", nw)
	}
	n.ok(append(append(args, vzOnBridge...), img, "sh", "-c", httpdScript)...)
	addrs := n.ok("exec", name, "ip", "-o", "-4", "addr")
	for _, nw := range names {
		var ip string
		for _, l := range strings.Split(addrs, "\n") {
			f := strings.Fields(l)
			if len(f) >= 4 && strings.HasPrefix(f[3], nets[nw]+".") {
				ip = strings.Split(f[3], "/")[0]
			}
		}
		if ip == "" {
			t.Errorf("no address on network %s (%s.0/24) in the container:\n%s", nw, nets[nw], addrs)
			continue
		}
		if page := httpGet(t, net.JoinHostPort(ip, "80")); !strings.Contains(page, "hello from") {
			t.Errorf("GET from %s on network %s: %q", ip, nw, page)
		}
	}
	for _, ifc := range []string{"eth0", "eth1"} {
		if _, errs, code := n.run("", "exec", name, "ip", "link", "show", ifc); code != 0 {
			t.Errorf("no %s in the container: %s", ifc, errs)
		}
	}
	// Each network's default route, as the namespace has them (one did
	// replace the other).
	routes := strings.Join(strings.Fields(n.ok("exec", name, "ip", "route")), " ")
	for _, prefix := range nets {
		if !strings.Contains(routes, "default via "+prefix+".1") {
			t.Errorf("no default route via %s.1 in the container: %s", prefix, routes)
		}
	}
	if got := strings.TrimSpace(n.ok("exec", name, "cat", "/proc/sys/net/ipv4/conf/eth1/arp_ignore")); got != "2" {
		t.Errorf("--sysctl net.ipv4.conf.eth1.arp_ignore=2: %q in the container", got)
	}
	// The IPv4 settings a new namespace inherits from the host's.
	host, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if got := n.ok("exec", name, "cat", "/proc/sys/net/ipv4/ip_forward"); got != string(host) {
		t.Errorf("ip_forward: %q in the container, %q on the host (a runc container inherits it)", got, host)
	}
	n.ok("rm", "-f", name)
	for _, nw := range names {
		n.ok("network", "rm", nw)
	}
}

// A namespace given by path with two interfaces (CRI with Multus: eth0
// and net1) gives the VM a NIC for each, with each one's addresses,
// routes and sysctls; annotation io.vzrun.nics=1 keeps it to eth0.
func TestNetworkNamespacePathTwoInterfaces(t *testing.T) {
	v := newVZ(t)
	n := os.Getpid()%200 + 20
	name := fmt.Sprintf("vzm%d", os.Getpid())
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	sh("ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	for i, ifc := range []string{"eth0", "net1"} {
		hostIf := fmt.Sprintf("vzm%d-%d", os.Getpid()%100000, i)
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostIf).Run() })
		sh("ip", "link", "add", hostIf, "type", "veth", "peer", "name", ifc, "netns", name)
		sh("ip", "addr", "add", fmt.Sprintf("10.%d.%d.1/24", 215+i, n), "dev", hostIf)
		sh("ip", "link", "set", hostIf, "up")
		sh("ip", "-n", name, "addr", "add", fmt.Sprintf("10.%d.%d.2/24", 215+i, n), "dev", ifc)
		sh("ip", "-n", name, "link", "set", ifc, "up")
	}
	sh("ip", "-n", name, "route", "add", "default", "via", fmt.Sprintf("10.215.%d.1", n))
	// An IPv4 link-local address is an address like any other.
	sh("ip", "-n", name, "addr", "add", "169.254.10.5/16", "dev", "eth0")
	sh("ip", "-n", name, "route", "add", "10.217.0.0/16", "via", fmt.Sprintf("10.216.%d.1", n))
	sh("ip", "-n", name, "route", "add", "10.218.0.0/16", "via", "10.219.0.1", "dev", "net1", "onlink")
	// Two routes to one destination with one metric: the first in the
	// table is the one taken, net1's here.
	sh("ip", "-n", name, "route", "add", "10.220.0.0/16", "via", fmt.Sprintf("10.216.%d.1", n), "dev", "net1", "metric", "300")
	sh("ip", "-n", name, "route", "append", "10.220.0.0/16", "via", fmt.Sprintf("10.215.%d.1", n), "dev", "eth0", "metric", "300")
	// Someone else's ingress filter on net1: it stays when vzrun's go.
	sh("tc", "-n", name, "qdisc", "add", "dev", "net1", "ingress")
	sh("tc", "-n", name, "filter", "add", "dev", "net1", "parent", "ffff:", "prio", "5", "protocol", "ip", "u32", "match", "ip", "src", "10.199.0.1/32", "flowid", "1:1")
	sh("ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv4.conf.net1.arp_ignore=2")

	// The host answers on net1's peer (also reachable through eth0's
	// default route: the connection says only that the path works).
	l, err := net.Listen("tcp", fmt.Sprintf("10.216.%d.1:0", n))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, "hello-over-net1")
			c.Close()
		}
	}()
	b := newBundle(t, "sh", "-c", "ip -o -4 addr; ip route; echo arp_ignore $(cat /proc/sys/net/ipv4/conf/net1/arp_ignore 2>&1); nc "+strings.Replace(l.Addr().String(), ":", " ", 1)+" </dev/null")
	b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/var/run/netns/" + name})
	b.save(t)
	r := v.run("", "run", "--bundle", b.Dir, uniqueID(t))
	if r.code != 0 {
		t.Fatalf("run: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	out := strings.Join(strings.Fields(r.stdout), " ")
	first, second := strings.Index(out, fmt.Sprintf("10.220.0.0/16 via 10.216.%d.1 dev net1", n)), strings.Index(out, fmt.Sprintf("10.220.0.0/16 via 10.215.%d.1 dev eth0", n))
	if first < 0 || second < 0 || first > second {
		t.Errorf("the two routes to 10.220.0.0/16 not both there in the namespace's order (net1's first):\n%s", r.stdout)
	}
	for _, want := range []string{
		fmt.Sprintf("eth0 inet 10.215.%d.2/24", n),
		"eth0 inet 169.254.10.5/16",
		fmt.Sprintf("net1 inet 10.216.%d.2/24", n),
		fmt.Sprintf("default via 10.215.%d.1 dev eth0", n),
		fmt.Sprintf("10.217.0.0/16 via 10.216.%d.1 dev net1", n),
		"10.218.0.0/16 via 10.219.0.1 dev net1 onlink",
		"arp_ignore 2",
		"hello-over-net1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("guest lacks %q:\n%s", want, r.stdout)
		}
	}

	tc := func(dev string) string {
		out, _ := exec.Command("tc", "-n", name, "filter", "show", "dev", dev, "ingress").CombinedOutput()
		return string(out)
	}
	if f := tc("net1"); !strings.Contains(f, "pref 5") || strings.Contains(f, "mirred") {
		t.Errorf("net1's ingress filters after the container: %s (want the foreign one at pref 5 and no redirect)", f)
	}
	if f := tc("eth0"); strings.Contains(f, "mirred") {
		t.Errorf("eth0 keeps a redirect after the container: %s", f)
	}

	b.annotate(t, "io.vzrun.nics", "1")
	r = v.run("", "--debug", "run", "--bundle", b.Dir, uniqueID(t))
	if out := strings.Join(strings.Fields(r.stdout), " "); r.code != 0 || strings.Contains(out, "net1 inet") || !strings.Contains(out, "eth0 inet") {
		t.Errorf("io.vzrun.nics=1: exit %d, the guest's interfaces:\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "net1 do not reach it") {
		t.Errorf("io.vzrun.nics=1: no warning naming net1: %s", r.stderr)
	}
	b.annotate(t, "io.vzrun.nics", "9")
	if r = v.run("", "run", "--bundle", b.Dir, uniqueID(t)); r.code == 0 || !strings.Contains(r.stderr, "io.vzrun.nics") {
		t.Errorf("io.vzrun.nics=9: exit %d, stderr %q", r.code, r.stderr)
	}
}

// A detached create that fails after the network is connected (here: the
// port to publish is taken) leaves nothing in a namespace given by path,
// and runs the poststop hooks, as runc's create does, before it returns.
func TestNetworkFailedCreateCleansUp(t *testing.T) {
	v := newVZ(t)
	h := newHostNetNS(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	b := newBundle(t, "sleep", "100")
	b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: h.path})
	marker := filepath.Join(t.TempDir(), "poststop-ran")
	b.Spec.Hooks = &specs.Hooks{Poststop: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "touch " + marker}}}}
	b.save(t)
	b.annotate(t, "io.vzrun.publish", fmt.Sprintf("127.0.0.1:%d:80", port))
	id := uniqueID(t)
	r := v.run("", "create", "--bundle", b.Dir, id)
	if r.code == 0 {
		v.run("", "delete", "-f", id)
		t.Fatalf("create with a taken port succeeded")
	}
	if q := h.tc(t); strings.Contains(q, "ingress") {
		t.Errorf("a failed create left an ingress qdisc on eth0:\n%s", q)
	}
	if links := h.links(t); strings.Contains(links, "vztap") {
		t.Errorf("a failed create left a tap:\n%s", links)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the poststop hook did not run before create returned: %v", err)
	}
}

// An interrupted detached create (^C, SIGTERM) abandons the container the
// way a kill -9 of it does: its monitor undoes what it made (a redirect in
// a namespace given by path, the poststop hooks) before create returns.
func TestNetworkInterruptedCreateCleansUp(t *testing.T) {
	v := newVZ(t)
	h := newHostNetNS(t)
	b := newBundle(t, "sleep", "100")
	b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: h.path})
	dir := t.TempDir()
	started, marker := filepath.Join(dir, "hook-started"), filepath.Join(dir, "poststop-ran")
	b.Spec.Hooks = &specs.Hooks{
		CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "touch " + started + "; sleep 1"}}},
		Poststop:      []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo ran >> " + marker}}},
	}
	b.save(t)
	id := uniqueID(t)
	cmd := v.cmd("create", "--bundle", b.Dir, id)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool { _, err := os.Stat(started); return err == nil })
	_ = cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if err == nil {
		v.run("", "delete", "-f", id)
		t.Fatalf("an interrupted create succeeded")
	}
	if q := h.tc(t); strings.Contains(q, "ingress") {
		t.Errorf("an interrupted create left an ingress qdisc on eth0:\n%s", q)
	}
	if got, err := os.ReadFile(marker); err != nil || string(got) != "ran\n" {
		t.Errorf("poststop hooks after an interrupted create: %q, %v (want one run)", got, err)
	}
	if r := v.run("", "state", id); r.code == 0 {
		t.Errorf("the interrupted container's state is still there: %s", r.stdout)
	}
}
