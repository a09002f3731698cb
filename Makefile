# agentvm — one GNU Makefile: build, images, check, check-unit, check-integration, fuzz, bench, install.
# V=1 for verbose; SANITIZE=address,undefined for sanitizer builds.

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share/agentvm
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
B ?= build

CC ?= gcc
PKGS := json-c libnl-3.0 libnl-route-3.0 libnl-nf-3.0 libnftables libseccomp libarchive libmicrohttpd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# libmicrohttpd: headers only; src/metrics_http.c loads it when a metrics server starts.
# libarchive likewise: src/vm/archive_dl.c loads it for copies (~7 ms off every start).
PKG_LIBS := $(shell pkg-config --libs $(filter-out libmicrohttpd libarchive,$(PKGS)) 2>/dev/null) -lm
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

WARN := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wundef -Wstrict-prototypes \
	-Wmissing-prototypes -Wno-unused-parameter -Wvla -Wpointer-arith
CFLAGS ?= -O2 -g
# -fPIC and hidden visibility: the same objects make libagentvm.so, which exports only what
# src/include/agentvm.h marks AGENTVM_EXPORT (and src/api/libagentvm.map allows).
CFLAGS += -fPIC -fvisibility=hidden
CFLAGS += -std=gnu17 -D_GNU_SOURCE= -fstack-protector-strong -D_FORTIFY_SOURCE=2 $(WARN) \
	-I. -Isrc -DAVM_DATADIR='"$(DATADIR)"' $(PKG_CFLAGS)
# No recovery: a sanitizer report fails the run (UBSan only prints by default).
ifneq ($(SANITIZE),)
CFLAGS += -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZE) -fno-sanitize-recover=all
endif

ifeq ($(V),1)
Q :=
else
Q := @
endif

# --- sources -----------------------------------------------------------------------------------
# src/ is one folder per capability (README: the source tree); cli/ and shim/ are programs,
# gen/ a build-time generator.
CORE_SRC := $(filter-out src/cli/% src/shim/% src/gen/%,$(wildcard src/*/*.c))
CLI_SRC := $(wildcard src/cli/*.c)
# The shim is an outside program of libagentvm; it compiles the pure utilities it shares.
SHIM_SRC := $(wildcard src/shim/*.c) src/base/proc.c src/base/sha256.c src/base/strv.c
QMP_SRC := $(wildcard qmp/*.c)
NF_SRC := $(wildcard netfilter/*.c)
PROTO_SRC := guest-init/proto.c
GUEST_SRC := $(filter-out $(PROTO_SRC),$(wildcard guest-init/*.c))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)

obj = $(patsubst %.c,$(B)/obj/%.o,$(1))

# Everything below the CLI in one internal archive (one archive: ld resolves the modules'
# references among themselves in any order). The CLI, the shim, the tests and the benches link
# it; the public libagentvm (.so and .a, further down) is made from the same objects.
LIBINTERNAL := $(B)/libavm-internal.a
LIBS_ALL := $(LIBINTERNAL)
INTERNAL_SRC := $(CORE_SRC) $(QMP_SRC) $(NF_SRC) $(PROTO_SRC)

# The public library: libagentvm.so.$(LIB_VERSION) (SONAME libagentvm.so.$(LIB_MAJOR)) and
# libagentvm.a (one relocatable object whose internal symbols are made local), agentvm.h and
# agentvm.pc (make install-lib; make install installs it too).
LIB_MAJOR := 0
LIB_VERSION := $(LIB_MAJOR).1.0
LIBSO := $(B)/lib/libagentvm.so.$(LIB_VERSION)
LIBA := $(B)/lib/libagentvm.a
LIB_PUBLIC := $(LIBSO) $(LIBA)
# agentvm.pc for the PREFIX, LIBDIR and INCLUDEDIR of the install (written by install-lib).
PC_SED = -e 's|@PREFIX@|$(PREFIX)|; s|@VERSION@|$(LIB_VERSION)|; s|@PKGS@|$(PKGS)|' \
	-e 's|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|' \
	-e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|' 

AGENTVM := $(B)/agentvm
SHIM := $(B)/containerd-shim-agentvm-v2
IMAGES := $(B)/images
VMLINUX := $(IMAGES)/vmlinux
INITRAMFS := $(IMAGES)/initramfs.cpio
BASELINE_INITRAMFS := $(IMAGES)/baseline-initramfs.cpio
GUEST_INIT := $(IMAGES)/agentvm-init
UNIT_BINS := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRC))
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(B)/fuzz/%,$(FUZZ_SRC))

.PHONY: rootfs all build images check check-unit check-layers check-fuzz check-integration fuzz bench install install-lib \
	clean distclean \
	deps demo ci jail-user shim-objs
all: build images

# Debian 12 packages for building, testing and running (apt-get, as root).
DEB_PKGS := build-essential pkg-config clang libjson-c-dev libnl-3-dev libnl-route-3-dev \
	libnftables-dev libseccomp-dev libcmocka-dev qemu-system-x86 qemu-utils linux-source-6.1 \
	bc bison flex libelf-dev cpio busybox-static nftables iproute2 xz-utils socat dnsmasq-base \
	python3 e2fsprogs mmdebstrap skopeo umoci uidmap git openssl openssh-client dropbear-bin \
	libarchive-dev libmicrohttpd-dev prometheus containerd libnl-nf-3-dev \
	python3-grpcio protobuf-compiler
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
		grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$(echo $$missing | sed 's/^/ /')"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
		case " $$missing " in *" prometheus "*) \
			echo "deps: prometheus is for the tests only: its services stay off"; \
			if [ -d /run/systemd/system ]; then systemctl disable --now prometheus \
				prometheus-node-exporter >/dev/null 2>&1 || true; fi ;; esac; \
		case " $$missing " in *" containerd "*) \
			echo "deps: containerd is for the shim tests only: its service stays off"; \
			if [ -d /run/systemd/system ]; then systemctl disable --now containerd \
				>/dev/null 2>&1 || true; fi ;; esac; \
	else echo "deps: all Debian packages present"; fi
	@# The image builder installs agent CLIs with the host's npm (any: a newer one from
	@# nodesource provides it too; Debian's is the fallback).
	@command -v npm >/dev/null || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm; }
	@$(MAKE) --no-print-directory jail-user

# The unprivileged user every QEMU runs as (src/jail/jail.h): a system user with no login and no home.
jail-user:
	@id agentvm-qemu >/dev/null 2>&1 || { echo "deps: creating system user agentvm-qemu"; \
		useradd --system --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin agentvm-qemu; }

# The main job in one command: set up, build, boot a sandbox and run a command in it.
demo: deps
	$(MAKE) all rootfs
	$(AGENTVM) run -- sh -c 'echo "hello from $$(uname -sr) in a microVM"; grep -m1 "model name" /proc/cpuinfo'
	$(AGENTVM) run --image agent -- sh -c '. /etc/os-release; echo "$$PRETTY_NAME in a microVM:"; \
		python3 -c "import sys; print(\"python\", sys.version.split()[0])"; \
		node -e "console.log(\"node\", process.version)"; git --version; \
		echo "claude $$(claude --version)"; echo "copilot $$(copilot --version | head -1)"'
build: $(AGENTVM) $(SHIM) $(LIB_PUBLIC)
images: $(VMLINUX) $(INITRAMFS) $(BASELINE_INITRAMFS)

# Objects are rebuilt when the flags change (e.g. -fPIC came with libagentvm.so): a stamp
# named by a hash of CFLAGS.
CFLAGS_STAMP = $(B)/obj/.cflags-$(shell echo $(subst ',,$(subst ",,$(CFLAGS))) | md5sum | cut -c1-12)
$(CFLAGS_STAMP):
	@mkdir -p $(dir $@)
	@rm -f $(B)/obj/.cflags-* && touch $@
$(B)/obj/%.o: %.c $(CFLAGS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# The seccomp allowlist compiled once, at build time (libseccomp's compile is ~1.7 ms a start).
$(B)/gen/seccomp-gen: src/gen/seccomp_gen.c src/jail/jail_seccomp.c src/jail/jail_seccomp.h
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) src/gen/seccomp_gen.c src/jail/jail_seccomp.c -o $@ $(PKG_LIBS) $(LDFLAGS)
$(B)/gen/jail_bpf.h: $(B)/gen/seccomp-gen
	$(Q)$< >$@.tmp && mv $@.tmp $@
$(call obj,src/jail/jail.c): $(B)/gen/jail_bpf.h
CFLAGS += -I$(B)/gen

$(LIBINTERNAL): $(call obj,$(INTERNAL_SRC))
# netfilter/ alone (with the error type it reports in), for tools built against it by hand
# (tests/integration/test_nf_rules.sh builds netfilter/tools/nf_tool.c).
$(B)/libnf.a: $(call obj,$(NF_SRC) src/base/error.c)
$(B)/lib%.a:
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIBSO): $(call obj,$(INTERNAL_SRC)) src/api/libagentvm.map
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared $(LDFLAGS) -Wl,-soname,libagentvm.so.$(LIB_MAJOR) \
		-Wl,--version-script=src/api/libagentvm.map -Wl,-z,defs -o $@ \
		$(call obj,$(INTERNAL_SRC)) $(PKG_LIBS)
	$(Q)ln -sf $(notdir $@) $(B)/lib/libagentvm.so.$(LIB_MAJOR)
	$(Q)ln -sf $(notdir $@) $(B)/lib/libagentvm.so
# One object: a program linking the archive sees agentvm_* and nothing of the internals.
$(LIBA): $(call obj,$(INTERNAL_SRC))
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  AR      $@")
	$(Q)ld -r -o $(B)/lib/agentvm-all.o $^ && \
		objcopy --localize-hidden $(B)/lib/agentvm-all.o && \
		rm -f $@ && ar rcs $@ $(B)/lib/agentvm-all.o && rm -f $(B)/lib/agentvm-all.o
$(AGENTVM): $(call obj,$(CLI_SRC)) $(LIBS_ALL)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(call obj,$(CLI_SRC)) $(LIBS_ALL) $(PKG_LIBS)

# containerd's runtime v2 shim (runtime io.containerd.agentvm.v2), on the same library.
# It links the public archive (internal symbols made local), as any outside program would.
$(SHIM): $(call obj,$(SHIM_SRC)) $(LIBA)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(call obj,$(SHIM_SRC)) $(LIBA) $(PKG_LIBS)
# The objects the shim is linked from, beside the library (tests/integration/test_library.sh
# checks they use nothing of it but agentvm_*).
shim-objs:
	@echo $(call obj,$(SHIM_SRC))

# --- guest images ------------------------------------------------------------------------------
# The guest PID 1 is static and built without sanitizers: it runs alone inside the VM.
GUEST_CFLAGS := -std=gnu17 -D_GNU_SOURCE= -O2 -static -Wall -Wextra -Werror -Iguest-init
$(GUEST_INIT): $(GUEST_SRC) $(PROTO_SRC) $(wildcard guest-init/*.h)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CCLD    $@ (static)")
	$(Q)$(CC) $(GUEST_CFLAGS) $(GUEST_SRC) $(PROTO_SRC) -o $@

$(IMAGES)/baseline-init: images/baseline-init.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(GUEST_CFLAGS) $< -o $@

$(INITRAMFS): $(GUEST_INIT) images/build-initramfs.sh
	$(Q)sh images/build-initramfs.sh $(GUEST_INIT) $@

$(BASELINE_INITRAMFS): $(IMAGES)/baseline-init images/build-initramfs.sh
	$(Q)sh images/build-initramfs.sh --bare $(IMAGES)/baseline-init $@

# The kernel build is cached outside the tree (keyed by a hash of its inputs) by the script.
$(VMLINUX): images/build-kernel.sh images/kernel/agentvm.config
	$(Q)sh images/build-kernel.sh $@

# Root images for --image: the built-in recipes base and agent into the image store
# ($AGENTVM_CACHE_DIR, default /var/cache/agentvm/images). A build whose inputs match the
# image its name points at is skipped, so CI and `make demo` pay once. The host's local CAs
# (a TLS-intercepting proxy's, which Debian's bundle lacks) go into each image's trust store.
IMAGE_CA_CERTS ?= $(wildcard /usr/local/share/ca-certificates/*.crt)
IMAGE_NAMES ?= base agent
rootfs: $(AGENTVM)
	$(Q)for i in $(IMAGE_NAMES); do \
		$(AGENTVM) image build $$i $(foreach c,$(IMAGE_CA_CERTS),--ca-cert $(c)) >/dev/null \
			|| exit 1; done

# --- tests -------------------------------------------------------------------------------------
$(B)/tests/%: tests/unit/%.c $(LIBS_ALL)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(CFLAGS) $(TEST_INC_$*) $< $(filter %.o,$^) -o $@ $(LIBS_ALL) $(PKG_LIBS) \
		$(TEST_LIBS_$*) $(CMOCKA_LIBS) $(LDFLAGS)
# test_files builds its archives with libarchive itself.
TEST_LIBS_test_files := $(shell pkg-config --libs libarchive 2>/dev/null)
# Tests of guest-init code also link the pure guest objects they exercise.
$(B)/tests/test_guest_net: $(call obj,guest-init/netcfg.c)
$(B)/tests/test_guest_disk: $(call obj,guest-init/diskcfg.c guest-init/netcfg.c)
$(B)/tests/test_guest_imagecfg: $(call obj,guest-init/imagecfg.c guest-init/request.c \
	guest-init/util.c guest-init/tarcmd.c guest-init/tar.c)
$(B)/tests/test_guest_tar: $(call obj,guest-init/tar.c)
$(B)/tests/test_shim_proto: $(call obj,src/shim/pb.c src/shim/ttrpc.c src/shim/process.c \
	src/shim/config.c)
$(B)/tests/test_shim_podstate: $(call obj,src/shim/podstate.c src/shim/process.c)
$(B)/tests/test_cli_exit: $(call obj,src/cli/exit.c)
$(B)/tests/test_guest_share: $(call obj,guest-init/sharecfg.c guest-init/diskcfg.c \
	guest-init/netcfg.c)

check-unit: $(UNIT_BINS) check-layers
	$(Q)sh tests/run-unit.sh $(UNIT_BINS)

# The rooms of src/ and the direction of their arrows (README: the source tree), from the
# includes and from the objects' symbols.
check-layers: $(AGENTVM) $(SHIM)
	$(Q)python3 tests/check_layers.py $(B)

check-integration: all rootfs
	$(Q)sh tests/integration/run.sh $(AGENTVM)

check: check-unit check-fuzz check-integration

# A short fuzz pass of every parser of untrusted bytes; `make fuzz FUZZ_SECONDS=600` for long runs.
check-fuzz: $(FUZZ_BINS)
	$(Q)sh tests/fuzz/run.sh $(or $(FUZZ_SECONDS),10) $(FUZZ_BINS)

# The test job in one command: set up everything, then the whole suite (what .ci/run runs).
# Then the unit tests and the fuzz smoke again under ASan + UBSan (build-san/, no recovery).
ci: deps
	$(MAKE) check
	$(MAKE) B=$(B)-san SANITIZE=address,undefined check-unit check-fuzz

FUZZ_CC ?= clang
# Each target links the parser it exercises and nothing that touches the machine.
FUZZ_LINK_fuzz_proto := $(PROTO_SRC)
FUZZ_LINK_fuzz_qmp := $(QMP_SRC)
FUZZ_LINK_fuzz_guest_exec := $(PROTO_SRC) guest-init/request.c guest-init/util.c guest-init/imagecfg.c \
	guest-init/tarcmd.c guest-init/tar.c
FUZZ_LINK_fuzz_guest_tar := guest-init/tar.c
FUZZ_LINK_fuzz_guest_share := $(PROTO_SRC) guest-init/sharecfg.c guest-init/diskcfg.c guest-init/netcfg.c
FUZZ_LINK_fuzz_host_untar := src/vm/files_untar.c src/vm/archive_dl.c src/base/util.c src/base/error.c
FUZZ_LINK_fuzz_guest_net := $(PROTO_SRC) guest-init/netcfg.c
FUZZ_LINK_fuzz_guest_disk := guest-init/diskcfg.c
FUZZ_LINK_fuzz_guest_imagecfg := guest-init/imagecfg.c
FUZZ_LINK_fuzz_oci_config := src/image/image_oci.c src/base/strv.c src/base/util.c src/base/error.c
FUZZ_LINK_fuzz_shim_ttrpc := src/shim/pb.c src/shim/ttrpc.c src/shim/process.c src/shim/config.c \
	src/base/strv.c
$(B)/fuzz/fuzz_shim_ttrpc: $(SHIM_SRC) $(wildcard src/shim/*.h)
FUZZ_LINK_fuzz_shim_podstate := src/shim/podstate.c src/shim/process.c src/base/strv.c
$(B)/fuzz/fuzz_shim_podstate: $(SHIM_SRC) $(wildcard src/shim/*.h)
FUZZ_LINK_fuzz_egress := netfilter/rules.c netfilter/dns.c netfilter/util.c src/base/error.c
FUZZ_LINK_fuzz_tz := src/base/tz.c
FUZZ_LINK_fuzz_anomaly_conf := src/vm/anomaly.c src/base/util.c src/base/error.c
# The state-file readers pull in the core (net.c needs netfilter/, snapshot.c the QEMU argv).
FUZZ_LINK_fuzz_state_files := $(CORE_SRC) $(QMP_SRC) $(NF_SRC) $(PROTO_SRC)
FUZZ_LINK_fuzz_metrics := $(CORE_SRC) $(QMP_SRC) $(NF_SRC) $(PROTO_SRC)
$(B)/fuzz/%: tests/fuzz/%.c $(QMP_SRC) $(PROTO_SRC) $(GUEST_SRC) $(B)/gen/jail_bpf.h
	@mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) -g -O1 -std=gnu17 -D_GNU_SOURCE= -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=all -I. -Isrc -I$(B)/gen \
		$(FUZZ_INC_$*) $(PKG_CFLAGS) $< $(FUZZ_LINK_$*) -o $@ $(PKG_LIBS)
fuzz: $(FUZZ_BINS)
	$(Q)sh tests/fuzz/run.sh $(or $(FUZZ_SECONDS),30) $(FUZZ_BINS)

$(B)/bench/exec-rtt: bench/exec_rtt.c $(LIBS_ALL)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) $< -o $@ $(LIBS_ALL) $(PKG_LIBS) $(LDFLAGS)

$(B)/bench/qmp-rtt: bench/qmp_rtt.c $(LIBS_ALL)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) $< -o $@ $(LIBS_ALL) $(PKG_LIBS) $(LDFLAGS)

$(B)/bench/jail-cost: bench/jail_cost.c $(LIBS_ALL)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) $< -o $@ $(LIBS_ALL) $(PKG_LIBS) $(LDFLAGS)

$(B)/bench/net-cost: bench/net_cost.c $(LIBS_ALL)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) $< -o $@ $(LIBS_ALL) $(PKG_LIBS) $(LDFLAGS)

bench: all $(B)/bench/exec-rtt $(B)/bench/qmp-rtt $(B)/bench/jail-cost $(B)/bench/net-cost
	$(Q)sh bench/run.sh $(AGENTVM)

# The library alone (what tests/integration/test_library.sh installs into a DESTDIR).
install-lib: $(LIB_PUBLIC)
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0755 $(LIBSO) $(DESTDIR)$(LIBDIR)/
	ln -sf libagentvm.so.$(LIB_VERSION) $(DESTDIR)$(LIBDIR)/libagentvm.so.$(LIB_MAJOR)
	ln -sf libagentvm.so.$(LIB_MAJOR) $(DESTDIR)$(LIBDIR)/libagentvm.so
	install -m 0644 $(LIBA) $(DESTDIR)$(LIBDIR)/
	install -m 0644 src/include/agentvm.h $(DESTDIR)$(INCLUDEDIR)/
	sed $(PC_SED) src/api/agentvm.pc.in >$(DESTDIR)$(PKGCONFIGDIR)/agentvm.pc

install: all jail-user install-lib
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)
	install -m 0755 $(AGENTVM) $(DESTDIR)$(BINDIR)/agentvm
	install -m 0755 $(SHIM) $(DESTDIR)$(BINDIR)/containerd-shim-agentvm-v2
	install -m 0644 $(VMLINUX) $(INITRAMFS) $(DESTDIR)$(DATADIR)/
	install -d $(DESTDIR)$(DATADIR)/recipes
	install -m 0755 images/build-rootfs.sh $(DESTDIR)$(DATADIR)/
	install -m 0644 images/recipes/* $(DESTDIR)$(DATADIR)/recipes/

clean:
	rm -rf $(B)/obj $(B)/gen $(B)/tests $(B)/fuzz $(B)/lib $(B)/*.a $(AGENTVM) $(SHIM)
distclean:
	rm -rf $(B)

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
