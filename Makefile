# vzrun — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
OUT       ?= $(CURDIR)/_output
BIN       := $(OUT)/bin
SHARE     := $(OUT)/share/vzrun
ARCH      ?= x86_64
GOARCH_x86_64 := amd64
GOARCH_arm64  := arm64
GOARCH    := $(GOARCH_$(ARCH))
CACHE     ?= $(or $(VZRUN_CACHE),$(HOME)/.cache/vzrun)
PREFIX    ?= /usr/local
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

# Pinned versions of everything fetched from the Go proxy.
RUNC_VERSION          := v1.5.2
CONTAINERD_VERSION    := v2.4.2
CNI_PLUGINS_VERSION   := v1.9.1
NERDCTL_VERSION       := v2.2.2
BUILDKIT_VERSION      := v0.33.1
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_TTRPC_VERSION := v1.2.10
STATICCHECK_VERSION   := v0.8.2
# gVisor tags no Go module versions; this pseudo-version resolves here.
RUNSC_VERSION         := v0.0.0-20260701204157-69c2d17aea96

KERNEL_IMAGE_x86_64 := vmlinux
KERNEL_IMAGE_arm64  := Image
KERNEL := $(SHARE)/$(KERNEL_IMAGE_$(ARCH))
INITRD := $(SHARE)/initrd$(if $(filter arm64,$(ARCH)),-arm64).img
RUNC   := $(CACHE)/runc-$(RUNC_VERSION)-$(ARCH)/runc

# libseccomp-dev is named with the host's architecture: make deps-arm64
# installs the arm64 one too, and dpkg-query takes either for a bare name.
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null)
APT_PACKAGES := qemu-system-x86 qemu-utils linux-source-6.1 busybox-static e2fsprogs erofs-utils \
	runc build-essential bc flex bison libelf-dev cpio kmod iproute2 protobuf-compiler \
	libseccomp-dev$(if $(DEB_ARCH),:$(DEB_ARCH)) pkg-config hyperfine python3 iptables iperf3 fio bats gawk jq

export PATH := $(BIN):$(HOME)/go/bin:$(PATH)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## install the Debian packages vzrun needs (apt, as root)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

.PHONY: build
build: ## build vzrun and the guest agent into _output/bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN)/vzrun ./cmd/vzrun
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X github.com/containerd/containerd/v2/version.Version=vzrun-$(VERSION) -X github.com/containerd/containerd/v2/version.Revision=$(VERSION)" \
		-o $(BIN)/containerd-shim-vz-v2 ./cmd/containerd-shim-vz-v2
	CGO_ENABLED=0 GOARCH=$(GOARCH) $(GO) build -trimpath -ldflags "-s -w" -o $(BIN)/vz-agent-$(ARCH) ./cmd/vz-agent

.PHONY: kernel
kernel: ## build the guest kernel for ARCH (cached outside the repo)
	kernel/build.sh $(ARCH) $(KERNEL)

ifeq ($(ARCH),arm64)
# go install will not cross-compile into GOBIN: build in the module's own
# directory instead, with cgo against Debian's arm64 libseccomp (multiarch,
# make deps-arm64), so the arm64 runc has seccomp like the x86_64 one.
$(RUNC):
	@echo "runc: cross-building static runc $(RUNC_VERSION) for arm64"
	mkdir -p $(dir $@)
	src=$$(cd $(dir $@) && $(GO) mod download -json github.com/opencontainers/runc@$(RUNC_VERSION) | sed -n 's/.*"Dir": "\(.*\)",$$/\1/p') && \
	cd $$src && CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=aarch64-linux-gnu-gcc \
		PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig $(GO) build -trimpath -tags "seccomp netgo osusergo" \
		-ldflags '-s -w -extldflags "-static"' -o $@.tmp . && mv $@.tmp $@
else
$(RUNC):
	@echo "runc: building static runc $(RUNC_VERSION) for $(ARCH)"
	mkdir -p $(dir $@)
	cd $(dir $@) && CGO_ENABLED=1 GOARCH=$(GOARCH) GOBIN=$(dir $@) $(GO) install -tags "seccomp netgo osusergo" \
		-ldflags '-s -w -extldflags "-static"' github.com/opencontainers/runc@$(RUNC_VERSION)
endif

CONTAINERD_BIN := $(CACHE)/containerd-$(CONTAINERD_VERSION)
$(CONTAINERD_BIN)/containerd:
	@echo "containerd: building $(CONTAINERD_VERSION) and ctr from the Go proxy"
	mkdir -p $(CONTAINERD_BIN)
	cd $(CONTAINERD_BIN) && GOBIN=$(CONTAINERD_BIN) $(GO) install -tags "no_btrfs urfave_cli_no_docs" \
		github.com/containerd/containerd/v2/cmd/containerd@$(CONTAINERD_VERSION) \
		github.com/containerd/containerd/v2/cmd/ctr@$(CONTAINERD_VERSION)

# containerd 2.2 still starts shims through the pre-2.3 protocol: the
# legacy shim start test runs the shim under it.
CONTAINERD_LEGACY_VERSION := v2.2.1
CONTAINERD_LEGACY_BIN     := $(CACHE)/containerd-$(CONTAINERD_LEGACY_VERSION)
$(CONTAINERD_LEGACY_BIN)/containerd:
	@echo "containerd: building $(CONTAINERD_LEGACY_VERSION) and ctr from the Go proxy (legacy shim start protocol)"
	mkdir -p $(CONTAINERD_LEGACY_BIN)
	cd $(CONTAINERD_LEGACY_BIN) && GOBIN=$(CONTAINERD_LEGACY_BIN) $(GO) install -tags "no_btrfs urfave_cli_no_docs" \
		github.com/containerd/containerd/v2/cmd/containerd@$(CONTAINERD_LEGACY_VERSION) \
		github.com/containerd/containerd/v2/cmd/ctr@$(CONTAINERD_LEGACY_VERSION)

CNI_BIN := $(CACHE)/cni-plugins-$(CNI_PLUGINS_VERSION)
$(CNI_BIN)/bridge:
	@echo "cni plugins: building $(CNI_PLUGINS_VERSION) from the Go proxy"
	mkdir -p $(CNI_BIN)
	GOBIN=$(CNI_BIN) CGO_ENABLED=0 $(GO) install \
		$(foreach p,main/bridge main/loopback ipam/host-local meta/portmap meta/firewall meta/tuning,github.com/containernetworking/plugins/plugins/$(p)@$(CNI_PLUGINS_VERSION))

NERDCTL_BIN := $(CACHE)/nerdctl-$(NERDCTL_VERSION)
$(NERDCTL_BIN)/nerdctl:
	./test/install-nerdctl.sh $(NERDCTL_VERSION) $(NERDCTL_BIN)

BUILDKIT_BIN := $(CACHE)/buildkit-$(BUILDKIT_VERSION)
$(BUILDKIT_BIN)/buildkitd:
	./test/install-buildkit.sh $(BUILDKIT_VERSION) $(BUILDKIT_BIN)

# gVisor's runsc, the peer make bench compares with (systrap platform).
RUNSC := $(CACHE)/runsc-$(RUNSC_VERSION)/runsc
$(RUNSC):
	@echo "runsc: building gVisor's runsc $(RUNSC_VERSION) from the Go proxy"
	mkdir -p $(dir $@)
	cd $(dir $@) && GOBIN=$(dir $@) CGO_ENABLED=0 $(GO) install gvisor.dev/gvisor/runsc@$(RUNSC_VERSION)

.PHONY: test-deps
test-deps: $(CONTAINERD_BIN)/containerd $(CONTAINERD_LEGACY_BIN)/containerd $(CNI_BIN)/bridge $(NERDCTL_BIN)/nerdctl $(BUILDKIT_BIN)/buildkitd ## install the pinned peers the tests drive (containerd 2.4 and 2.2, ctr, nerdctl, CNI plugins, BuildKit)

.PHONY: initrd
initrd: build $(RUNC) ## pack the guest initramfs (agent as /init, static runc)
	kernel/initrd.sh $(BIN)/vz-agent-$(ARCH) $(RUNC) $(INITRD)

.PHONY: all
all: deps build kernel initrd ## everything a container needs

.PHONY: install
install: all ## install vzrun and the guest into PREFIX
	install -D -m 0755 $(BIN)/vzrun $(PREFIX)/bin/vzrun
	install -D -m 0755 $(BIN)/containerd-shim-vz-v2 $(PREFIX)/bin/containerd-shim-vz-v2
	install -D -m 0644 $(KERNEL) $(PREFIX)/share/vzrun/$(notdir $(KERNEL))
	install -D -m 0644 $(INITRD) $(PREFIX)/share/vzrun/$(notdir $(INITRD))

.PHONY: demo
demo: all ## set everything up and run busybox in a VM
	test/mkbundle.sh $(OUT)/demo
	sed -i 's/"terminal": true/"terminal": false/; s/^\(\t*\)"sh"$$/\1"sh", "-c", "echo hello from a VM; uname -a"/' $(OUT)/demo/config.json
	$(BIN)/vzrun --root $(OUT)/run run --bundle $(OUT)/demo demo-$$$$

.PHONY: test
test: all guest-arm64 test-deps lint check-protos ## lint, unit tests and integration tests (boots real VMs)
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /test/)
	CONTAINERD_BIN=$(CONTAINERD_BIN) CONTAINERD_LEGACY_BIN=$(CONTAINERD_LEGACY_BIN) NERDCTL_BIN=$(NERDCTL_BIN) CNI_BIN=$(CNI_BIN) BUILDKIT_BIN=$(BUILDKIT_BIN) \
	$(GO) test -count=1 -v -timeout 30m ./test/integration/... 2>&1 | tee $(OUT)/integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)'; exit $${PIPESTATUS[0]}

.PHONY: conformance
conformance: all ## OCI runtime-tools validation suite, vzrun next to runc (about 11 minutes)
	VZRUN=$(BIN)/vzrun OUT=$(OUT) test/conformance/run.sh

.PHONY: bats
bats: all ## runc's own bats suite (a subset), vzrun next to the pinned runc (about 15 minutes)
	VZRUN=$(BIN)/vzrun RUNC=$(RUNC) OUT=$(OUT) test/bats/run.sh

.PHONY: bench
bench: all test-deps $(RUNSC) ## vzrun next to runc and gVisor's runsc on this machine (median, p95, ratio)
	VZRUN=$(BIN)/vzrun RUNSC=$(RUNSC) test/bench/run.sh
	VZRUN=$(BIN)/vzrun test/bench/network.sh
	VZRUN_BIN=$(BIN) CONTAINERD_BIN=$(CONTAINERD_BIN) NERDCTL=$(NERDCTL_BIN)/nerdctl test/bench/nerdctl.sh

.PHONY: lint
lint: check-darwin ## gofmt, go vet and staticcheck (and check-darwin)
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); [ -z "$$out" ] || { echo "gofmt:"; echo "$$out"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

.PHONY: protos
protos: ## regenerate api/ from the .proto files (pinned generators)
	GOBIN=$(CACHE)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(CACHE)/bin $(GO) install github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@$(PROTOC_GEN_TTRPC_VERSION)
	PATH=$(CACHE)/bin:$$PATH protoc --proto_path=. --go_out=paths=source_relative:. \
		--go-ttrpc_out=paths=source_relative:. $$(git ls-files 'api/*.proto')

.PHONY: check-protos
check-protos: protos ## fail if the generated code differs from the .proto files
	@git diff --exit-code -- api/ || { echo "api/: generated code is stale: run make protos"; exit 1; }

.PHONY: clean
clean: ## remove _output (the kernel cache stays)
	rm -rf $(OUT)

# --- macOS: Virtualization.framework on Apple silicon -----------------------
# From Linux: the darwin backend is type-checked (cgo files included) and
# the host binaries cross-built; the arm64 guest is built and, in make
# test, booted under qemu-system-aarch64. On a Mac: make darwin signs.

APT_PACKAGES_ARM64 := gcc-aarch64-linux-gnu qemu-system-arm libseccomp-dev:arm64
BUSYBOX_ARM64      := $(CACHE)/busybox-arm64/busybox
DARWIN_ARCHES      := arm64 amd64
ENTITLEMENTS       := macos/vzrun.entitlements
CODESIGN_IDENTITY  ?= -
# Host packages: all but the guest agent, which only ever runs in a Linux guest.
HOST_PKGS = $$($(GO) list ./... | grep -v -e '/agent$$' -e '/cmd/vz-agent$$')

.PHONY: deps-arm64
deps-arm64: ## install the arm64 guest's cross compiler, qemu-system-aarch64 and arm64 libseccomp (apt, as root)
	@dpkg --print-foreign-architectures | grep -qx arm64 || { echo "dpkg: adding architecture arm64"; dpkg --add-architecture arm64 && apt-get update -qq; }
	@missing=$$(for p in $(APT_PACKAGES_ARM64); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BUSYBOX_ARM64): | deps-arm64
	@echo "busybox: Debian's busybox-static for arm64 (the arm64 smoke test's container)"
	rm -rf $(dir $@) && mkdir -p $(dir $@)deb && chmod 0777 $(dir $@)deb
	cd $(dir $@)deb && apt-get download -q -o APT::Sandbox::User=root busybox-static:arm64 && dpkg-deb -x busybox-static_*_arm64.deb .
	mv $(dir $@)deb/bin/busybox $@ && rm -rf $(dir $@)deb

.PHONY: guest-arm64
guest-arm64: deps-arm64 $(BUSYBOX_ARM64) ## build the arm64 guest (kernel Image, agent, initramfs) Apple silicon Macs boot
	$(MAKE) ARCH=arm64 kernel initrd

.PHONY: check-darwin
check-darwin: ## type-check the macOS code for darwin/arm64 and amd64 (cgo files too); cross-build the binaries for darwin/arm64
	$(GO) run ./internal/darwincheck/cmd/darwincheck -goarch '$(DARWIN_ARCHES)' $(HOST_PKGS)
	@echo "GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 go build (host packages)"
	@GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 $(GO) build $(HOST_PKGS)
	GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 $(GO) build -trimpath -o $(OUT)/darwin-arm64/ ./cmd/vzrun ./cmd/containerd-shim-vz-v2
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags "-s -w" -o $(OUT)/darwin-arm64/vz-agent-arm64 ./cmd/vz-agent
	@python3 -c 'import plistlib,sys; sys.exit(plistlib.load(open("$(ENTITLEMENTS)","rb")).get("com.apple.security.virtualization") is not True)' \
		|| { echo "$(ENTITLEMENTS): no com.apple.security.virtualization"; exit 1; }

.PHONY: darwin
darwin: ## on a Mac: build vzrun and the shim with cgo and sign them with the virtualization entitlement
	@[ "$$(uname -s)" = Darwin ] || { echo "make darwin runs on macOS; make check-darwin checks the code from here"; exit 1; }
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN)/vzrun ./cmd/vzrun
	CGO_ENABLED=1 $(GO) build -trimpath -o $(BIN)/containerd-shim-vz-v2 ./cmd/containerd-shim-vz-v2
	codesign --force --sign '$(CODESIGN_IDENTITY)' --entitlements $(ENTITLEMENTS) $(BIN)/vzrun $(BIN)/containerd-shim-vz-v2
	codesign --display --entitlements - $(BIN)/vzrun

.PHONY: install-darwin
install-darwin: ## on a Mac, after make darwin: install the signed binaries and the arm64 guest (from a Linux make guest-arm64) into PREFIX
	@[ -f $(BIN)/vzrun ] && [ -f $(BIN)/containerd-shim-vz-v2 ] || { echo "no signed binaries in $(BIN): run make darwin first"; exit 1; }
	@[ -f $(SHARE)/Image ] && [ -f $(SHARE)/initrd-arm64.img ] || { echo "no arm64 guest in $(SHARE): run make guest-arm64 on Linux and copy it here"; exit 1; }
	install -d $(PREFIX)/bin $(PREFIX)/share/vzrun
	install -m 0755 $(BIN)/vzrun $(BIN)/containerd-shim-vz-v2 $(PREFIX)/bin/
	install -m 0644 $(SHARE)/Image $(SHARE)/initrd-arm64.img $(PREFIX)/share/vzrun/
