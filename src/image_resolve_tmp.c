/* TEMPORARY (lead's scaffolding until the image store lands from the images branch). */
#include "image.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int image_resolve(const char *name, struct image_info **out, struct avm_error *err)
{
	const char *c = getenv("AGENTVM_CACHE_DIR");
	char p[4096], id[128] = "";
	struct image_info *i;
	struct stat st;
	FILE *f;

	snprintf(p, sizeof(p), "%s/images/names/%s", c ? c : "/var/cache/agentvm", name);
	f = fopen(p, "re");
	if (!f || !fgets(id, sizeof(id), f)) {
		if (f)
			fclose(f);
		return avm_error_set(err, -ENOENT, "image %s not found", name);
	}
	fclose(f);
	id[strcspn(id, "\n")] = 0;
	i = calloc(1, sizeof(*i));
	i->name = strdup(name);
	i->id = strdup(id);
	if (asprintf(&i->dir, "%s/images/%s", c ? c : "/var/cache/agentvm", id) < 0) abort();
	if (asprintf(&i->rootfs, "%s/rootfs.ext4", i->dir) < 0) abort();
	if (stat(i->rootfs, &st) < 0) {
		image_info_free(i);
		return avm_error_set(err, -EIO, "image %s incomplete", name);
	}
	i->size = (uint64_t)st.st_size;
	*out = i;
	return 0;
}

void image_info_free(struct image_info *i)
{
	if (!i)
		return;
	free(i->name);
	free(i->id);
	free(i->dir);
	free(i->rootfs);
	free(i);
}
