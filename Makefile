# AgentMesh. `make help` lists the targets.
SHELL := /usr/bin/env bash
GO ?= go
BIN := $(CURDIR)/bin
AS_ROOT := $(CURDIR)/test/scripts/as-root
CMDS := agentd agentmesh-cni ztunnel meshlab controller meshctl
TEST_TIMEOUT ?= 40m
SOAK_DURATION ?= 30m

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install what building and testing need (clang-19, llvm-19, bpftool, iproute2; needs root)
	@$(AS_ROOT) $(CURDIR)/test/scripts/deps

.PHONY: build
build: ## build the binaries into bin/
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

.PHONY: generate
generate: deps ## regenerate the eBPF objects and Go bindings in bpf/ (needs clang-19)
	$(GO) generate ./bpf/...

.PHONY: check-generate
check-generate: generate ## fail if the committed eBPF objects differ from a fresh build
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: generated files differ from a fresh 'make generate'; commit them" >&2; exit 1; }

.PHONY: manifests
manifests: ## render the Helm chart deploy/charts/agentmesh into deploy/manifests/agentmesh.yaml (Helm Go SDK, no helm binary)
	cd deploy/render && $(GO) run . -values manifests-values.yaml -out ../manifests/agentmesh.yaml

.PHONY: check-manifests
check-manifests: ## lint the chart and fail if deploy/manifests/agentmesh.yaml differs from a fresh render
	cd deploy/render && $(GO) run . -values manifests-values.yaml -out ../manifests/agentmesh.yaml -check

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

.PHONY: test
test: ## run every test, the privileged lab tests included (needs root; installs deps)
	@$(AS_ROOT) $(MAKE) --no-print-directory test-as-root

.PHONY: test-as-root
test-as-root: check-generate check-manifests lint build kube jaeger containerd coredns helm image lab-image
	cd deploy/render && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd deploy/image && $(GO) vet ./... && $(GO) test -count=1 ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	# The node's in-process tests again under the race detector (they run
	# the whole pipeline with real TLS and HBONE on a fake pod network).
	$(GO) test -race -count=1 -run 'TestFakeNet|TestHTTPPerRequest|TestHTTPRoute|TestTrafficPolicy|TestPendingPod|TestProtocolDetection|TestTCPMetrics|TestL7Policy|TestTracing' ./ztunnel/

# The image: static binaries (no cgo, trimmed paths, no build id: the same
# sources give the same bytes) in one layer, written by deploy/image (its own
# module) as an OCI layout and a docker-archive tarball, tagged as the
# chart's default image; every time in it is the commit's.
IMAGE_BINS := agentd agentmesh-cni ztunnel controller meshctl

.PHONY: image
image: ## build the OCI image into bin/image: an OCI layout (oci/) and a tarball for docker load, ctr images import and kind load image-archive
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags '-s -w -buildid=' -o $(BIN)/static/ $(addprefix ./cmd/,$(IMAGE_BINS))
	cd deploy/image && $(GO) run . -bin $(BIN)/static -out $(BIN)/image -chart ../charts/agentmesh \
		-created "$$(git log -1 --format=%ct 2>/dev/null || echo 0)" -revision "$$(git rev-parse HEAD 2>/dev/null)"

# The lab's own image for real nodes: static meshlab, whose `app` commands
# are the sample agents and whose `app pause` is the pod sandbox (no
# registry is reachable; the lab imports it into each node's containerd).
.PHONY: lab-image
lab-image: ## build the lab's apps and pause image into bin/lab-image (localhost/agentmesh-lab/apps:lab)
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags '-s -w -buildid=' -o $(BIN)/static/ ./cmd/meshlab
	cd deploy/image && $(GO) run . -bin $(BIN)/static -out $(BIN)/lab-image -ref localhost/agentmesh-lab/apps:lab \
		-binaries meshlab -entrypoint "/usr/local/bin/meshlab app pause" -title agentmesh-lab-apps \
		-description "AgentMesh lab: sample agents (meshlab app) and the pod sandbox (meshlab app pause)"

.PHONY: bench
bench: ## benchmark the mesh against direct pod-to-pod on the lab (needs root)
	@$(AS_ROOT) $(MAKE) --no-print-directory bench-as-root

.PHONY: bench-as-root
bench-as-root: deps build kube
	$(BIN)/meshlab bench --bin-dir $(BIN)

.PHONY: soak
soak: ## run a steady mixed load on a lab for SOAK_DURATION (default 30m; e.g. make soak SOAK_DURATION=3m) and fail if ztunnel's goroutines, fds or RSS or the eBPF map entries grow, or calls fail (needs root; not part of make test)
	@$(AS_ROOT) $(MAKE) --no-print-directory soak-as-root SOAK_DURATION=$(SOAK_DURATION)

.PHONY: soak-as-root
soak-as-root: deps build
	$(BIN)/meshlab soak --bin-dir $(BIN) --duration $(SOAK_DURATION)

.PHONY: demo
demo: ## run the mesh on a local two-node lab and show what it did (needs root)
	@$(AS_ROOT) $(MAKE) --no-print-directory demo-as-root

.PHONY: demo-as-root
demo-as-root: deps build kube jaeger coredns
	$(BIN)/meshlab demo --bin-dir $(BIN)

.PHONY: clean
clean: ## remove build output and whatever a crashed lab left behind
	@if [ "$$(id -u)" = 0 ] && [ -x $(BIN)/meshlab ]; then $(BIN)/meshlab down; fi
	rm -rf $(BIN)

KUBE := $(BIN)/kube
KUBE_MOD := test/kube/go.mod test/kube/go.sum

.PHONY: kube
kube: $(KUBE)/kube-apiserver $(KUBE)/kube-controller-manager $(KUBE)/kube-scheduler $(KUBE)/etcd $(KUBE)/kubectl $(KUBE)/kubelet $(KUBE)/kube-proxy ## build kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kubectl, and for real lab nodes the kubelet and kube-proxy, from source into bin/kube/ (minutes the first time)

# One binary at a time (2 cores): the order-only prerequisites chain the builds under -j too.
$(KUBE)/kube-controller-manager: | $(KUBE)/kube-apiserver
$(KUBE)/kube-scheduler: | $(KUBE)/kube-controller-manager
$(KUBE)/etcd: | $(KUBE)/kube-scheduler
$(KUBE)/kubectl: | $(KUBE)/etcd
$(KUBE)/kubelet: | $(KUBE)/kubectl
$(KUBE)/kube-proxy: | $(KUBE)/kubelet
$(KUBE)/%: test/kube/cmd/%/main.go $(KUBE_MOD)
	@echo "kube: building $* ..."; start=$$(date +%s); \
	cd test/kube && v=$$($(GO) list -m -f '{{.Version}}' k8s.io/kubernetes) && \
	$(GO) build -trimpath -o $@ -ldflags "-s -w \
		-X k8s.io/component-base/version.gitVersion=$$v \
		-X k8s.io/component-base/version.gitMajor=$$(echo $$v | cut -d. -f1 | tr -d v) \
		-X k8s.io/component-base/version.gitMinor=$$(echo $$v | cut -d. -f2) \
		-X k8s.io/component-base/version.gitTreeState=clean" ./cmd/$* && \
	echo "kube: built $* in $$(( $$(date +%s) - start ))s ($$(du -h $@ | cut -f1))"

# buf runs from tools/buf, its own module; protoc-gen-go is a tool of the main
# module (buf.gen.yaml), so the generated code matches the protobuf runtime in go.mod.
PROTO_DIR := api/configapi/proto

# Jaeger all-in-one, built from source as a Go tool of its own module
# (test/jaeger), for the lab's trace backend; cached like the kube binaries.
JAEGER_MOD := test/jaeger/go.mod test/jaeger/go.sum

.PHONY: jaeger
jaeger: $(BIN)/jaeger ## build Jaeger (all-in-one, in-memory) from source into bin/jaeger for the lab's traces (minutes the first time)

$(BIN)/jaeger: $(JAEGER_MOD)
	@echo "jaeger: building ..."; start=$$(date +%s); \
	cd test/jaeger && $(GO) build -trimpath -ldflags "-s -w" -o $(abspath $@) github.com/jaegertracing/jaeger/cmd/jaeger && \
	echo "jaeger: built in $$(( $$(date +%s) - start ))s ($$(du -h $(abspath $@) | cut -f1))"

# containerd v2 (containerd, ctr, containerd-shim-runc-v2), built from source
# as Go tools of its own module (test/containerd), static, for the lab's real
# Kubernetes nodes (with Debian's runc); cached like the kube binaries.
CONTAINERD_MOD := test/containerd/go.mod test/containerd/go.sum
CONTAINERD_CMDS := containerd ctr containerd-shim-runc-v2

.PHONY: containerd
containerd: $(BIN)/containerd/containerd ## build containerd v2, ctr and the runc shim from source into bin/containerd/ (about a minute the first time)

$(BIN)/containerd/containerd: $(CONTAINERD_MOD)
	@echo "containerd: building ..."; start=$$(date +%s); \
	cd test/containerd && CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(abspath $(BIN)/containerd)/ \
		$(addprefix github.com/containerd/containerd/v2/cmd/,$(CONTAINERD_CMDS)) && \
	echo "containerd: built in $$(( $$(date +%s) - start ))s"

# CoreDNS with only the plugins the lab uses (test/coredns/cmd/coredns, its
# own module), static, the cluster DNS for the lab's real Kubernetes nodes;
# cached like the kube binaries.
COREDNS_SRC := test/coredns/go.mod test/coredns/go.sum test/coredns/cmd/coredns/main.go

.PHONY: coredns
coredns: $(BIN)/coredns ## build CoreDNS (ready, health, errors, log, loadbalance, cache, kubernetes, forward) from source into bin/coredns for the lab's cluster DNS (a few minutes the first time)

$(BIN)/coredns: $(COREDNS_SRC)
	@echo "coredns: building ..."; start=$$(date +%s); \
	cd test/coredns && CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(abspath $@) ./cmd/coredns && \
	echo "coredns: built in $$(( $$(date +%s) - start ))s ($$(du -h $(abspath $@) | cut -f1))"

# helm, the real CLI, built from the Helm Go SDK's module (a tool of
# deploy/render, whose helm version it shares), for the install on the
# lab's real nodes and for users without one; cached like the kube binaries.
HELM_MOD := deploy/render/go.mod deploy/render/go.sum

.PHONY: helm
helm: $(BIN)/helm ## build helm from source into bin/helm (a few minutes the first time)

$(BIN)/helm: $(HELM_MOD)
	@echo "helm: building ..."; start=$$(date +%s); \
	cd deploy/render && v=$$($(GO) list -m -f '{{.Version}}' helm.sh/helm/v3) && \
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$$v" -o $(abspath $@) helm.sh/helm/v3/cmd/helm && \
	echo "helm: built $$v in $$(( $$(date +%s) - start ))s ($$(du -h $(abspath $@) | cut -f1))"

.PHONY: dashboards
dashboards: ## regenerate the chart's Grafana dashboard (deploy/charts/agentmesh/dashboards/agentmesh.json) from internal/dashboard
	$(GO) run ./internal/dashboard/gen deploy/charts/agentmesh/dashboards/agentmesh.json

.PHONY: proto
proto: ## lint api/configapi/proto and regenerate its Go code (buf and protoc-gen-go as Go tools; no protoc)
	buf=$$($(GO) -C tools/buf tool -n buf) && cd $(PROTO_DIR) && $$buf lint && $$buf format -w && $$buf generate

.PHONY: check-proto
check-proto: proto ## fail if the committed Go code of api/configapi/proto differs from a fresh 'make proto'
	@git diff --exit-code --stat -- $(PROTO_DIR) || { echo "$(PROTO_DIR): generated files differ from a fresh 'make proto'; commit them" >&2; exit 1; }

CONTROLLER_GEN := $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0

.PHONY: crds
crds: ## regenerate the CRDs in deploy/charts/agentmesh/crds and the DeepCopy code in controller/api from the Go types (controller-gen, run in its own module)
	$(CONTROLLER_GEN) object paths=./controller/api/... crd:crdVersions=v1 output:crd:dir=./deploy/charts/agentmesh/crds

# The Gateway API CRDs the mesh reads (GAMMA), from the experimental channel
# (HTTPRoute's retry is experimental) of the sigs.k8s.io/gateway-api version
# in go.mod; controller/view's TestGatewayCRDsMatchModule fails when they differ.
GATEWAY_API_CRDS := httproutes grpcroutes referencegrants

.PHONY: gateway-crds
gateway-crds: ## copy the Gateway API CRDs the mesh uses (HTTPRoute, GRPCRoute, ReferenceGrant; experimental channel) from the sigs.k8s.io/gateway-api module in go.mod into deploy/charts/agentmesh/crds
	dir=$$($(GO) list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api) && \
	for r in $(GATEWAY_API_CRDS); do \
		install -m 0644 $$dir/config/crd/experimental/gateway.networking.k8s.io_$$r.yaml deploy/charts/agentmesh/crds/ || exit 1; \
	done
