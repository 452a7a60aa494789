package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vzrun/vzrun/internal/sockpath"
	"github.com/vzrun/vzrun/runtime/hypervisor"
)

// VM templates (hypervisor.Templater), measured on QEMU 7.2 with TCG:
//
// The template VM boots with its RAM in a file shared with the host
// (memory-backend-file, share=on). Once the agent greets, it is stopped
// and migrated with x-ignore-shared to a small state file: RAM is not
// copied, it stays in the memory file. A clone starts with the same
// devices, maps that file privately (share=off: copy-on-write, so clones
// share the pages they have not written) and loads the state with
// -incoming. Devices whose backing is each VM's own attach in a way that
// survives the restore: shares are virtio-9p devices in fixed slots
// (9p keeps no state until the guest mounts it, and the agent mounts only
// after the restore), the NIC's tap is the clone's own descriptor, the
// agent channel the clone's own socket. virtio-fs cannot serve a clone:
// QEMU 7.2 does not migrate vhost-user-fs, and a vhost-user server writes
// into guest RAM through its own mapping of it, which a clone's private
// copy-on-write mapping of the template does not share.

const (
	templateMem   = "mem"
	templateState = "state"
)

var _ hypervisor.Templater = Templater{}

// Templater saves QEMU VMs as templates.
type Templater struct{}

func (Templater) SaveTemplate(ctx context.Context, cfg hypervisor.Config, dir string) (retErr error) {
	if !cfg.Restorable || cfg.Template != "" {
		return fmt.Errorf("template %s: the vm must be restorable and booted", dir)
	}
	h, err := New(cfg)
	if err != nil {
		return err
	}
	v := h.(*vm)
	v.saveDir = dir
	defer func() { _ = v.Stop(context.WithoutCancel(ctx)) }()
	if err := v.Start(ctx); err != nil {
		return err
	}
	// The greeting was read; nothing else may be said on the channel,
	// or the clones' agents would carry the conversation.
	if err := v.qmp(ctx, "stop", nil); err != nil {
		return err
	}
	if err := v.qmp(ctx, "migrate-set-capabilities", map[string]any{
		"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}},
	}); err != nil {
		return err
	}
	state := filepath.Join(dir, templateState)
	if err := v.qmp(ctx, "migrate", map[string]any{"uri": "exec:cat > " + shellQuote(state)}); err != nil {
		return err
	}
	return v.waitMigration(ctx)
}

// memoryBackend is the -object of the guest's RAM: a memfd shared with
// virtiofsd, or a template's memory file.
func (v *vm) memoryBackend(size string) string {
	switch {
	case v.saveDir != "":
		return "memory-backend-file,id=mem,size=" + size + ",mem-path=" + optValue(filepath.Join(v.saveDir, templateMem)) + ",share=on"
	case v.cfg.Template != "":
		return "memory-backend-file,id=mem,size=" + size + ",mem-path=" + optValue(filepath.Join(v.cfg.Template, templateMem)) + ",share=off"
	}
	return "memory-backend-memfd,id=mem,size=" + size + ",share=on"
}

// taps counts the NICs with a tap: their descriptors come first in QEMU's
// (fd 3 on).
func taps(nics []hypervisor.NIC) int {
	n := 0
	for _, nic := range nics {
		if nic.Tap != nil {
			n++
		}
	}
	return n
}

// restorableDevices are the shares in their 9p slots (empty slots serve an
// empty directory; a clone's shares are served by proxy helpers where
// QEMU has them, see usesProxy) and the NIC, plus -incoming for a clone.
func (v *vm) restorableDevices() ([]string, error) {
	c := v.cfg
	empty := v.path("empty")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		return nil, err
	}
	var args []string
	for i := range hypervisor.TemplateShares {
		tag, path, ro := hypervisor.SlotTag(i), empty, true
		if i < len(c.Shares) {
			if c.Shares[i].Tag != tag {
				return nil, fmt.Errorf("vm %s: share %d has tag %s, want %s in a restorable vm", c.ID, i, c.Shares[i].Tag, tag)
			}
			path, ro = c.Shares[i].Path, c.Shares[i].ReadOnly
		}
		id := "p9" + strconv.Itoa(i)
		fsdev := "local,id=" + id + ",path=" + optValue(path) + ",security_model=passthrough"
		if i < len(c.Shares) && v.proxy {
			fsdev = "proxy,id=" + id + ",sock_fd=" + strconv.Itoa(3+taps(c.NICs)+i)
		}
		if ro {
			fsdev += ",readonly=on"
		}
		args = append(args, "-fsdev", fsdev, "-device", "virtio-9p-device,fsdev="+id+",mount_tag="+tag)
	}
	args = append(args, nicArgs(c.NICs, 0)...)
	if c.Template != "" {
		args = append(args, "-incoming", "defer")
	}
	return args, nil
}

// restore loads a clone's state from its template and runs it.
func (v *vm) restore(ctx context.Context) error {
	if err := v.qmp(ctx, "migrate-set-capabilities", map[string]any{
		"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}},
	}); err != nil {
		return err
	}
	state := filepath.Join(v.cfg.Template, templateState)
	if err := v.qmp(ctx, "migrate-incoming", map[string]any{"uri": "exec:cat " + shellQuote(state)}); err != nil {
		return err
	}
	if err := v.waitMigration(ctx); err != nil {
		return fmt.Errorf("vm %s: restoring %s: %w", v.cfg.ID, v.cfg.Template, err)
	}
	return v.qmp(ctx, "cont", nil)
}

// waitMigration polls query-migrate until the migration (either way) has
// completed.
func (v *vm) waitMigration(ctx context.Context) error {
	deadline := time.Now().Add(BootTimeout)
	for time.Now().Before(deadline) {
		status, err := v.migrationStatus(ctx)
		if err != nil {
			return err
		}
		switch status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s%s", status, v.consoleTail())
		}
		select {
		case <-v.done:
			return v.exitError("migrating")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return fmt.Errorf("migration did not complete within %s", BootTimeout)
}

func (v *vm) migrationStatus(ctx context.Context) (string, error) {
	out, err := v.qmpQuery(ctx, "query-migrate")
	if err != nil {
		return "", err
	}
	var r struct {
		Return struct {
			Status string `json:"status"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return "", err
	}
	return r.Return.Status, nil
}

// qmpQuery runs one argument-less QMP command and returns its reply.
func (v *vm) qmpQuery(ctx context.Context, command string) ([]byte, error) {
	c, err := v.dialQMP(ctx)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	for _, cmd := range []string{"qmp_capabilities", command} {
		if _, err := fmt.Fprintf(c, `{"execute":%q}`+"\n", cmd); err != nil {
			return nil, err
		}
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return nil, fmt.Errorf("qmp %s: %w", cmd, err)
			}
			if strings.Contains(string(line), `"error"`) {
				return nil, fmt.Errorf("qmp %s: %s", cmd, strings.TrimSpace(string(line)))
			}
			if strings.Contains(string(line), `"return"`) {
				if cmd == command {
					return line, nil
				}
				break
			}
		}
	}
	return nil, nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// dialQMP connects to the QMP socket, which QEMU makes only once the agent
// channel's client has connected (the chardevs come first).
func (v *vm) dialQMP(ctx context.Context) (net.Conn, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := sockpath.Dial(v.path("qmp.sock"))
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		select {
		case <-v.done:
			return nil, v.exitError("before its monitor came up")
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}
