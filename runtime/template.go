package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	api "github.com/vzrun/vzrun/api/agent/v1"
	"github.com/vzrun/vzrun/runtime/hypervisor"
	"github.com/vzrun/vzrun/runtime/network"
)

// VM templates: instead of booting a kernel for every container, vzrun
// boots one VM per (kernel, initrd, VMM, vCPUs, memory, accelerator) to
// the agent's greeting, saves it, and restores each container's VM from
// it, its memory shared copy-on-write with the template's. A template is
// made the first time it is needed and kept in the cache dir under a key
// of all its inputs, so a rebuilt kernel or initrd, another QEMU or
// another size makes a new one. A container that a template cannot serve
// (a block-device rootfs, more bind-mount sources than slots, the
// annotation io.vzrun.template=false) boots cold, and says so in the log.

// AnnotationTemplate set to "false" makes a container's VM boot cold.
const AnnotationTemplate = "io.vzrun.template"

// EnvTemplate set to 0 turns templates off for every container.
const EnvTemplate = "VZRUN_TEMPLATE"

// templateLayout changes when what a template holds changes (2: the TCG
// guest's CPU model; 3: tsc=reliable, a template could hold a guest whose
// clock had fallen back to refined-jiffies).
const templateLayout = "3"

// templater saves VMs as templates; nil where the backend cannot.
var templater hypervisor.Templater

// templateNICMAC is the NIC's address in every restorable VM: the guest
// learns it when the template boots, so every clone has it; the agent
// gives the NIC the container's own address.
var templateNICMAC = net.HardwareAddr{0x02, 0x76, 0x7a, 0x00, 0x00, 0x01}

// useTemplate says why a container with spec cannot restore from a
// template ("" if it can).
func useTemplate(spec *specs.Spec, shares, nics int) string {
	switch {
	case templater == nil:
		return "the hypervisor backend has no templates"
	case os.Getenv(EnvTemplate) == "0":
		return EnvTemplate + "=0"
	case isFalse(spec.Annotations[AnnotationTemplate]):
		return AnnotationTemplate + "=false"
	case spec.Annotations[AnnotationRootfs] != "" && spec.Annotations[AnnotationRootfs] != "virtiofs":
		return "the rootfs is a block device"
	case shares > hypervisor.TemplateShares:
		return fmt.Sprintf("%d shared directories, more than a template's %d", shares, hypervisor.TemplateShares)
	case nics > 1:
		return fmt.Sprintf("%d NICs, a template has one", nics)
	}
	return ""
}

// isFalse says a boolean annotation is set to false (0, f, false, ...).
func isFalse(v string) bool {
	b, err := strconv.ParseBool(v)
	return err == nil && !b
}

// templateInputs describes the files a template depends on, one line
// each: path, size, mtime, inode.
func templateInputs(files ...string) (string, error) {
	var b strings.Builder
	for _, f := range files {
		if f == "" {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(f, &st); err != nil {
			return "", &os.PathError{Op: "stat", Path: f, Err: err}
		}
		fmt.Fprintf(&b, "%s %d %d %d\n", f, st.Size, st.Mtim.Nano(), st.Ino)
	}
	return b.String(), nil
}

// natNIC says whether cfg's NIC is the backend's NAT.
func natNIC(cfg hypervisor.Config) bool { return len(cfg.NICs) > 0 && cfg.NICs[0].Tap == nil }

// templateKey names the template for cfg by everything it depends on; the
// second result is the files part, kept with the template.
func templateKey(cfg hypervisor.Config) (string, string, error) {
	vmm, _ := exec.LookPath("qemu-system-x86_64")
	inputs, err := templateInputs(cfg.Kernel, cfg.Initrd, vmm)
	if err != nil {
		return "", "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "layout=%s cpus=%d mem=%d accel=%s api=%s nat=%v\n%s", templateLayout, cfg.CPUs, cfg.MemoryMiB, cfg.Accel, api.Hello, natNIC(cfg), inputs)
	return hex.EncodeToString(h.Sum(nil))[:16], inputs, nil
}

// collectTemplates removes the templates whose kernel, initrd or QEMU has
// changed or gone (they can never be used again), and saves that died
// half-way.
func collectTemplates(ctx context.Context, root string) {
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		p := filepath.Join(root, e.Name())
		if strings.HasSuffix(e.Name(), ".lock") {
			// A lock whose template was never saved.
			if _, err := os.Stat(strings.TrimSuffix(p, ".lock")); err != nil {
				if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Hour {
					_ = os.Remove(p)
				}
			}
			continue
		}
		if strings.Contains(e.Name(), ".tmp-") {
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Hour {
				_ = os.RemoveAll(p)
			}
			continue
		}
		if !e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(p, "inputs"))
		stale := err != nil // saved before templates recorded their inputs
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f, _, _ := strings.Cut(line, " ")
			now, err := templateInputs(f)
			stale = stale || err != nil || strings.TrimSpace(now) != line
		}
		if stale {
			log.G(ctx).WithField("template", p).Debug("removing a stale vm template")
			_ = os.RemoveAll(p)
			_ = os.Remove(p + ".lock")
		}
	}
}

// template returns the directory of the template for cfg, saving one
// first if there is none. Concurrent callers wait for one to save it.
func (r *Runtime) template(ctx context.Context, cfg hypervisor.Config) (string, error) {
	key, inputs, err := templateKey(cfg)
	if err != nil {
		return "", err
	}
	root := filepath.Join(r.cacheDir(), "templates")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	dir := filepath.Join(root, key)
	if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
		return dir, nil
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
		return dir, nil
	}
	collectTemplates(ctx, root)
	t0 := time.Now()
	tmp, err := os.MkdirTemp(root, key+".tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	tcfg := cfg
	tcfg.ID, tcfg.StateDir, tcfg.ConsoleLog = "template-"+key, tmp, filepath.Join(tmp, "console.log")
	tcfg.Shares, tcfg.Disks, tcfg.Template = nil, nil, ""
	// The NIC's backend shapes the device's saved state (a tap's
	// virtio-net header), so NAT VMs and tap VMs have templates of their
	// own.
	tcfg.NICs = []hypervisor.NIC{{MAC: templateNICMAC}}
	if !natNIC(cfg) {
		tap, err := network.NewTap(network.TapName)
		if err != nil {
			return "", err
		}
		defer tap.Close()
		tcfg.NICs[0].Tap = tap.File
	}
	tcfg.Restorable = true
	if err := templater.SaveTemplate(ctx, tcfg, tmp); err != nil {
		return "", fmt.Errorf("saving template %s: %w", key, err)
	}
	for _, f := range []string{"agent.sock", "qmp.sock", "empty"} {
		_ = os.RemoveAll(filepath.Join(tmp, f))
	}
	if err := os.WriteFile(filepath.Join(tmp, "inputs"), []byte(inputs), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	log.G(ctx).WithFields(log.Fields{"template": dir, "took": time.Since(t0)}).Info("saved a vm template")
	return dir, nil
}

// restorable turns p into a VM restored from a template, if it can be.
func (r *Runtime) restorable(ctx context.Context, p *containerVM, spec *specs.Spec) {
	id := p.cfg.ID
	if why := useTemplate(spec, len(p.cfg.Shares), len(p.cfg.NICs)); why != "" {
		log.G(ctx).WithField("id", id).Debugf("cold boot: %s", why)
		return
	}
	dir, err := r.template(ctx, p.cfg)
	if err != nil {
		// The cold boot says what is wrong if the guest cannot boot at
		// all; if it can, boot warns that the template could not be made.
		log.G(ctx).WithError(err).WithField("id", id).Debug("cold boot: no template")
		p.templateErr = err
		return
	}
	if len(p.taps) == 0 && !p.nat {
		// Every restorable VM has a NIC; this one stays unconnected.
		tap, err := network.NewTap(network.TapName)
		if err != nil {
			log.G(ctx).WithError(err).WithField("id", id).Warn("cold boot: no tap for the template's nic")
			return
		}
		p.taps = []*network.Tap{tap}
		p.cfg.NICs = []hypervisor.NIC{{Tap: tap.File}}
	}
	p.cfg.NICs[0].MAC, p.nicMACs = templateNICMAC, []net.HardwareAddr{templateNICMAC}
	p.cfg.Restorable, p.cfg.Template = true, dir
	tags := map[string]string{}
	for i := range p.cfg.Shares {
		tags[p.cfg.Shares[i].Tag] = hypervisor.SlotTag(i)
		p.cfg.Shares[i].Tag = hypervisor.SlotTag(i)
	}
	p.rootfs.Type, p.rootfs.Source = "9p", tags[p.rootfs.Source]
	for _, s := range p.shares {
		s.Tag, s.FsType = tags[s.Tag], "9p"
	}
}

// entropy is what a restored guest reseeds its random numbers with.
func entropy() []byte {
	b := make([]byte, 64)
	f, err := os.Open("/dev/urandom")
	if err == nil {
		_, _ = f.Read(b)
		f.Close()
	}
	return b
}
