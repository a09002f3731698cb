/* SPDX-License-Identifier: MIT */
#include "vm/host.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"

#ifndef AVM_DATADIR
#define AVM_DATADIR "/usr/local/share/agentvm"
#endif

/* Whether /proc/cpuinfo's flags name hardware virtualisation (vmx or svm). */
static bool cpu_has_hw_virt(void)
{
	_cleanup_free_ char *buf = NULL;

	if (read_file("/proc/cpuinfo", &buf, 4 << 20) < 0)
		return true; /* cannot tell: let QEMU try */
	for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		return strstr(line, " vmx") || strstr(line, " svm");
	}
	return true;
}

const char *host_kvm_problem(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return "/dev/kvm is not available";
	close(fd);
	/*
	 * Measured inside a Firecracker VM: /dev/kvm opens and a real-mode probe runs, but a CPU
	 * without vmx/svm in its flags crashes every Linux guest early (KVM internal error at an
	 * XRSTOR; -cpu host even trips an assertion setting MSR 0x10a). Such a host is a nested
	 * hypervisor without hardware virtualisation: use TCG there.
	 */
	if (!cpu_has_hw_virt())
		return "/dev/kvm exists but the CPU advertises neither vmx nor svm (nested "
		       "virtualisation without hardware support: guests crash under it)";
	return NULL;
}

bool host_kvm_usable(void)
{
	return host_kvm_problem() == NULL;
}

int host_resolve_accel(enum vm_accel wanted, enum vm_accel *out, bool *fell_back,
		       struct avm_error *err)
{
	const char *problem = host_kvm_problem();

	*fell_back = false;
	switch (wanted) {
	case VM_ACCEL_KVM:
		if (problem)
			return avm_error_set(err, -ENODEV,
					     "--accel kvm: %s; enable virtualisation (kvm module, "
					     "access to /dev/kvm, nested vmx/svm) or use --accel tcg",
					     problem);
		*out = VM_ACCEL_KVM;
		return 0;
	case VM_ACCEL_TCG:
		*out = VM_ACCEL_TCG;
		return 0;
	default:
		*out = problem ? VM_ACCEL_TCG : VM_ACCEL_KVM;
		*fell_back = problem != NULL;
		return 0;
	}
}

unsigned long host_tsc_khz(void)
{
	_cleanup_free_ char *buf = NULL;
	const char *p;

	/* Exact when the kernel exports it (some distributions do), else the cpuinfo MHz. */
	if (read_file("/sys/devices/system/cpu/cpu0/tsc_freq_khz", &buf, 64) > 0)
		return strtoul(buf, NULL, 10);
	free(TAKE_PTR(buf));
	if (read_file("/proc/cpuinfo", &buf, 1 << 20) < 0)
		return 0;
	p = strstr(buf, "cpu MHz");
	if (!p || !(p = strchr(p, ':')))
		return 0;
	return (unsigned long)(strtod(p + 1, NULL) * 1000.0 + 0.5);
}

static int is_exec(const char *path)
{
	return access(path, X_OK) == 0;
}

int host_find_tool(const char *name, const char *env_var, const char *package, char **out,
		   struct avm_error *err)
{
	const char *env = getenv(env_var);
	const char *path = getenv("PATH");
	char buf[PATH_MAX];

	if (env && *env) {
		if (!is_exec(env))
			return avm_error_set(err, -ENOENT,
					     "%s=%s is not an executable; fix the variable or unset it",
					     env_var, env);
		*out = strdup(env);
		return *out ? 0 : -ENOMEM;
	}
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");
		if (n > 0 && snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, name) <
				     (int)sizeof(buf) &&
		    is_exec(buf)) {
			*out = strdup(buf);
			return *out ? 0 : -ENOMEM;
		}
		path += n;
		if (*path == ':')
			path++;
	}
	return avm_error_set(err, -ENOENT, "%s not found on PATH; install it with: apt-get install %s",
			     name, package);
}

int host_find_qemu(char **out, struct avm_error *err)
{
	return host_find_tool("qemu-system-x86_64", "AGENTVM_QEMU", "qemu-system-x86", out, err);
}

static bool dir_has_kernel(const char *dir)
{
	char p[PATH_MAX];

	if (snprintf(p, sizeof(p), "%s/vmlinux", dir) >= (int)sizeof(p))
		return false;
	return access(p, R_OK) == 0;
}

int host_find_images(char **out, struct avm_error *err)
{
	const char *env = getenv("AGENTVM_IMAGES");
	char exe[PATH_MAX], cand[PATH_MAX];
	ssize_t n;

	if (env && *env) {
		if (!dir_has_kernel(env))
			return avm_error_set(err, -ENOENT,
					     "AGENTVM_IMAGES=%s holds no vmlinux; run 'make images' "
					     "or fix the variable",
					     env);
		*out = strdup(env);
		return *out ? 0 : -ENOMEM;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = '\0';
		if (snprintf(cand, sizeof(cand), "%s/images", exe) < (int)sizeof(cand) &&
		    dir_has_kernel(cand))
			goto found;
		if (snprintf(cand, sizeof(cand), "%s/../share/agentvm", exe) < (int)sizeof(cand) &&
		    dir_has_kernel(cand))
			goto found;
	}
	snprintf(cand, sizeof(cand), "%s", AVM_DATADIR);
	if (dir_has_kernel(cand))
		goto found;
	return avm_error_set(err, -ENOENT,
			     "no guest kernel found (looked in $AGENTVM_IMAGES, next to the agentvm "
			     "binary and in %s); build the images with 'make' or pass --kernel",
			     AVM_DATADIR);
found:
	*out = realpath(cand, NULL);
	return *out ? 0 : -errno;
}

int host_guest_images(const char *kernel, const char *initrd, char **kernel_out,
		      char **initrd_out, struct avm_error *err)
{
	_cleanup_free_ char *images = NULL;
	int r;

	*kernel_out = *initrd_out = NULL;
	if ((!kernel || !initrd) && (r = host_find_images(&images, err)) < 0)
		return r;
	if (asprintf(kernel_out, "%s%s", kernel ? kernel : images, kernel ? "" : "/vmlinux") < 0) {
		*kernel_out = NULL;
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	if (asprintf(initrd_out, "%s%s", initrd ? initrd : images,
		     initrd ? "" : "/initramfs.cpio") < 0) {
		*initrd_out = NULL;
		return avm_error_set(err, -ENOMEM, "out of memory");
	}
	return 0;
}
