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
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_TTRPC_VERSION := v1.2.10
STATICCHECK_VERSION   := v0.8.2

KERNEL_IMAGE_x86_64 := vmlinux
KERNEL_IMAGE_arm64  := Image
KERNEL := $(SHARE)/$(KERNEL_IMAGE_$(ARCH))
INITRD := $(SHARE)/initrd$(if $(filter arm64,$(ARCH)),-arm64).img
RUNC   := $(CACHE)/runc-$(RUNC_VERSION)-$(ARCH)/runc

APT_PACKAGES := qemu-system-x86 qemu-utils linux-source-6.1 busybox-static e2fsprogs erofs-utils \
	runc build-essential bc flex bison libelf-dev cpio kmod iproute2 protobuf-compiler \
	libseccomp-dev pkg-config hyperfine python3 iptables iperf3

export PATH := $(BIN):$(HOME)/go/bin:$(PATH)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

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
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/containerd-shim-vz-v2 ./cmd/containerd-shim-vz-v2
	CGO_ENABLED=0 GOARCH=$(GOARCH) $(GO) build -trimpath -ldflags "-s -w" -o $(BIN)/vz-agent-$(ARCH) ./cmd/vz-agent

.PHONY: kernel
kernel: ## build the guest kernel for ARCH (cached outside the repo)
	kernel/build.sh $(ARCH) $(KERNEL)

$(RUNC):
	@echo "runc: building static runc $(RUNC_VERSION) for $(ARCH)"
	mkdir -p $(dir $@)
	cd $(dir $@) && CGO_ENABLED=1 GOARCH=$(GOARCH) GOBIN=$(dir $@) $(GO) install -tags "seccomp netgo osusergo" \
		-ldflags '-s -w -extldflags "-static"' github.com/opencontainers/runc@$(RUNC_VERSION)

CONTAINERD_BIN := $(CACHE)/containerd-$(CONTAINERD_VERSION)
$(CONTAINERD_BIN)/containerd:
	@echo "containerd: building $(CONTAINERD_VERSION) and ctr from the Go proxy"
	mkdir -p $(CONTAINERD_BIN)
	cd $(CONTAINERD_BIN) && GOBIN=$(CONTAINERD_BIN) $(GO) install -tags "no_btrfs urfave_cli_no_docs" \
		github.com/containerd/containerd/v2/cmd/containerd@$(CONTAINERD_VERSION) \
		github.com/containerd/containerd/v2/cmd/ctr@$(CONTAINERD_VERSION)

CNI_BIN := $(CACHE)/cni-plugins-$(CNI_PLUGINS_VERSION)
$(CNI_BIN)/bridge:
	@echo "cni plugins: building $(CNI_PLUGINS_VERSION) from the Go proxy"
	mkdir -p $(CNI_BIN)
	GOBIN=$(CNI_BIN) CGO_ENABLED=0 $(GO) install \
		$(foreach p,main/bridge main/loopback ipam/host-local meta/portmap meta/firewall meta/tuning,github.com/containernetworking/plugins/plugins/$(p)@$(CNI_PLUGINS_VERSION))

NERDCTL_BIN := $(CACHE)/nerdctl-$(NERDCTL_VERSION)
$(NERDCTL_BIN)/nerdctl:
	./test/install-nerdctl.sh $(NERDCTL_VERSION) $(NERDCTL_BIN)

.PHONY: test-deps
test-deps: $(CONTAINERD_BIN)/containerd $(CNI_BIN)/bridge $(NERDCTL_BIN)/nerdctl ## install the pinned peers the tests drive (containerd, ctr, nerdctl, CNI plugins)

.PHONY: initrd
initrd: build $(RUNC) ## pack the guest initramfs (agent as /init, static runc)
	kernel/initrd.sh $(BIN)/vz-agent-$(ARCH) $(RUNC) $(INITRD)

.PHONY: all
all: deps build kernel initrd ## everything a container needs

.PHONY: install
install: all ## install vzrun and the guest into PREFIX
	install -D -m 0755 $(BIN)/vzrun $(PREFIX)/bin/vzrun
	install -D -m 0644 $(KERNEL) $(PREFIX)/share/vzrun/$(notdir $(KERNEL))
	install -D -m 0644 $(INITRD) $(PREFIX)/share/vzrun/$(notdir $(INITRD))

.PHONY: demo
demo: all ## set everything up and run busybox in a VM
	test/mkbundle.sh $(OUT)/demo
	sed -i 's/"terminal": true/"terminal": false/; s/^\(\t*\)"sh"$$/\1"sh", "-c", "echo hello from a VM; uname -a"/' $(OUT)/demo/config.json
	$(BIN)/vzrun --root $(OUT)/run run --bundle $(OUT)/demo demo-$$$$

.PHONY: test
test: all test-deps lint check-protos ## lint, unit tests and integration tests (boots real VMs)
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /test/)
	$(GO) test -count=1 -v -timeout 30m ./test/integration/... 2>&1 | tee $(OUT)/integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)'; exit $${PIPESTATUS[0]}

.PHONY: conformance
conformance: all ## OCI runtime-tools validation suite, vzrun next to runc (about 11 minutes)
	VZRUN=$(BIN)/vzrun OUT=$(OUT) test/conformance/run.sh

.PHONY: bench
bench: all test-deps ## vzrun next to runc on this machine (median, p95, ratio)
	VZRUN=$(BIN)/vzrun test/bench/run.sh
	VZRUN=$(BIN)/vzrun test/bench/network.sh
	VZRUN_BIN=$(BIN) CONTAINERD_BIN=$(CONTAINERD_BIN) NERDCTL=$(NERDCTL_BIN)/nerdctl test/bench/nerdctl.sh

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
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
