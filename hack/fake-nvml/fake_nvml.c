/*
 * A fake libnvidia-ml.so.1 for testing SwarmOps' GPU agent without a GPU.
 *
 * The real pynvml bindings load this library (CDLL("libnvidia-ml.so.1") finds it
 * through LD_LIBRARY_PATH, or because a process already loaded it by path: the
 * dynamic loader matches the soname) and call the NVML entry points below by name.
 * What each call returns comes from a scenario file, JSON, named by the environment
 * variable SWARMOPS_FAKE_NVML_SCENARIO and re-read whenever it changes (inode, size
 * or mtime), so a test can inject faults into a running agent by rewriting the file
 * (write a temporary file and rename it over, so a reader never sees half of it).
 *
 * Why our own C shim rather than NVIDIA's mocknvml (k8s-test-infra): the tests need
 * to inject XID events while the agent waits on an event set, to make any single
 * call fail with NotSupported / FunctionNotFound / GpuIsLost, to fail nvmlInit, and
 * to describe MIG devices with opaque UUIDs; mocknvml serves static hardware
 * profiles, and extending a Go c-shared library (and a Go module download) for that
 * is more code than this file. Everything here is ours, so a scenario can say
 * exactly what the agent sees.
 *
 * Only what the agent calls is implemented; every other NVML symbol is absent, so
 * pynvml raises NVMLError_FunctionNotFound for it, exactly as with an old driver.
 * The scenario format is documented in docs/gpu.md and written by
 * swarmops.testbed.fakenvml.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- NVML's ABI: the few types and codes the implemented calls use -------------- */

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_UNKNOWN = 999,
};

#define MAX_DEVICES 64
#define MAX_MIG 8
#define MAX_LINKS 36
#define MAX_EVENTS 256
#define MAX_OVERRIDES 64
#define MAX_SETS 16
#define NAME_LEN 96
#define NO_INSTANCE 0xFFFFFFFFu

/* A handle is the address of one of these: stable for the life of the process,
 * like a real NVML handle, whatever the scenario says. */
typedef struct fake_handle {
    int kind; /* 1: a GPU, 2: a MIG device */
    int gpu;
    int mig;
} fake_handle;
typedef fake_handle *nvmlDevice_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

typedef union {
    double dVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    long long sllVal;
    int siVal;
    unsigned short usVal;
} nvmlValue_t;

typedef struct {
    unsigned int fieldId;
    unsigned int scopeId;
    long long timestamp;
    long long latencyUsec;
    int valueType;
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;

#define NVML_FI_DEV_GET_GPU_RECOVERY_ACTION 230
#define NVML_VALUE_TYPE_UNSIGNED_INT 1

/* ---- The scenario ------------------------------------------------------------ */

typedef struct {
    char function[64]; /* "*" matches every health call (see overridable) */
    nvmlReturn_t code;
} override;

typedef struct {
    char uuid[NAME_LEN];
    unsigned int gi, ci;
} fake_mig;

typedef struct {
    char uuid[NAME_LEN];
    char name[NAME_LEN];
    unsigned int temperature, slowdown_temperature, shutdown_temperature;
    unsigned long long ecc[2][2]; /* [corrected, uncorrected][volatile, aggregate] */
    unsigned int remapped[4];     /* corrected, uncorrected, pending, failure */
    unsigned int retired_pending;
    unsigned long long clocks_event_reasons;
    unsigned int pcie_width, pcie_max_width;
    int nvlink_count;
    unsigned int nvlink[MAX_LINKS];
    int recovery_action; /* < 0: the field is not supported */
    unsigned long long supported_events;
    int mig_mode;
    int mig_count;
    fake_mig mig[MAX_MIG];
    int override_count;
    override overrides[MAX_OVERRIDES];
} fake_device;

typedef struct {
    long long id;
    int gpu;
    unsigned long long type;
    unsigned long long data;
    unsigned int gi, ci;
} fake_event;

typedef struct {
    nvmlReturn_t init;
    nvmlReturn_t event_wait;
    char driver_version[NAME_LEN];
    int device_count; /* < 0: the number of devices */
    int count;
    fake_device devices[MAX_DEVICES];
    int override_count;
    override overrides[MAX_OVERRIDES];
    int event_count;
    fake_event events[MAX_EVENTS];
} scenario;

typedef struct {
    int used;
    unsigned long long mask[MAX_DEVICES];
    int delivered_count;
    long long delivered[MAX_EVENTS];
} event_set;
typedef event_set *nvmlEventSet_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static scenario *current;
static struct stat seen;
static int have_seen;
static int initialised;
static fake_handle gpu_handles[MAX_DEVICES];
static fake_handle mig_handles[MAX_DEVICES][MAX_MIG];
static event_set sets[MAX_SETS];

/* ---- A small JSON reader (objects, arrays, strings, numbers, literals) -------- */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;
typedef struct jnode {
    jtype type;
    double num;
    char *str;
    int count;
    char **keys;
    struct jnode **items;
} jnode;

typedef struct {
    const char *p;
    const char *end;
    int failed;
} jparser;

static void jfree(jnode *node) {
    if (!node) return;
    for (int i = 0; i < node->count; i++) {
        jfree(node->items[i]);
        if (node->keys) free(node->keys[i]);
    }
    free(node->items);
    free(node->keys);
    free(node->str);
    free(node);
}

static void jskip(jparser *ps) {
    while (ps->p < ps->end && isspace((unsigned char)*ps->p)) ps->p++;
}

static jnode *jvalue(jparser *ps, int depth);

static char *jstring(jparser *ps) {
    if (ps->p >= ps->end || *ps->p != '"') { ps->failed = 1; return NULL; }
    ps->p++;
    size_t cap = 32, len = 0;
    char *out = malloc(cap);
    while (ps->p < ps->end && *ps->p != '"') {
        char c = *ps->p++;
        if (c == '\\' && ps->p < ps->end) {
            char e = *ps->p++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': /* non-ASCII is never needed here: keep a placeholder */
                if (ps->end - ps->p >= 4) ps->p += 4;
                c = '?';
                break;
            default: c = e;
            }
        }
        if (len + 2 > cap) out = realloc(out, cap *= 2);
        out[len++] = c;
    }
    if (ps->p >= ps->end) { ps->failed = 1; free(out); return NULL; }
    ps->p++;
    out[len] = '\0';
    return out;
}

static void jappend(jnode *node, char *key, jnode *item) {
    node->items = realloc(node->items, sizeof(jnode *) * (size_t)(node->count + 1));
    if (node->type == J_OBJ) {
        node->keys = realloc(node->keys, sizeof(char *) * (size_t)(node->count + 1));
        node->keys[node->count] = key;
    }
    node->items[node->count++] = item;
}

static jnode *jvalue(jparser *ps, int depth) {
    jskip(ps);
    if (ps->p >= ps->end || depth > 32) { ps->failed = 1; return NULL; }
    jnode *node = calloc(1, sizeof(jnode));
    char c = *ps->p;
    if (c == '{' || c == '[') {
        node->type = c == '{' ? J_OBJ : J_ARR;
        char close = c == '{' ? '}' : ']';
        ps->p++;
        jskip(ps);
        if (ps->p < ps->end && *ps->p == close) { ps->p++; return node; }
        for (;;) {
            char *key = NULL;
            if (node->type == J_OBJ) {
                jskip(ps);
                key = jstring(ps);
                jskip(ps);
                if (ps->failed || ps->p >= ps->end || *ps->p != ':') {
                    free(key); ps->failed = 1; break;
                }
                ps->p++;
            }
            jnode *item = jvalue(ps, depth + 1);
            if (ps->failed) { free(key); jfree(item); break; }
            jappend(node, key, item);
            jskip(ps);
            if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
            if (ps->p < ps->end && *ps->p == close) { ps->p++; break; }
            ps->failed = 1;
            break;
        }
    } else if (c == '"') {
        node->type = J_STR;
        node->str = jstring(ps);
    } else if (!strncmp(ps->p, "true", 4) || !strncmp(ps->p, "false", 5)) {
        node->type = J_BOOL;
        node->num = *ps->p == 't';
        ps->p += *ps->p == 't' ? 4 : 5;
    } else if (!strncmp(ps->p, "null", 4)) {
        node->type = J_NULL;
        ps->p += 4;
    } else {
        char *after;
        node->type = J_NUM;
        node->num = strtod(ps->p, &after);
        if (after == ps->p) ps->failed = 1;
        ps->p = after;
    }
    return node;
}

static jnode *jget(const jnode *obj, const char *key) {
    if (!obj || obj->type != J_OBJ) return NULL;
    for (int i = 0; i < obj->count; i++)
        if (!strcmp(obj->keys[i], key)) return obj->items[i];
    return NULL;
}

static double jnum(const jnode *obj, const char *key, double fallback) {
    jnode *n = jget(obj, key);
    return n && (n->type == J_NUM || n->type == J_BOOL) ? n->num : fallback;
}

static void jstr(const jnode *obj, const char *key, char *out, const char *fallback) {
    jnode *n = jget(obj, key);
    snprintf(out, NAME_LEN, "%s", n && n->type == J_STR ? n->str : fallback);
}

/* ---- Scenario loading ------------------------------------------------------- */

/* An error as the scenario names it: a number, or a name like "not_supported". */
static nvmlReturn_t error_code(const jnode *n) {
    static const struct { const char *name; nvmlReturn_t code; } names[] = {
        {"ok", NVML_SUCCESS},
        {"success", NVML_SUCCESS},
        {"uninitialized", NVML_ERROR_UNINITIALIZED},
        {"not_supported", NVML_ERROR_NOT_SUPPORTED},
        {"no_permission", NVML_ERROR_NO_PERMISSION},
        {"not_found", NVML_ERROR_NOT_FOUND},
        {"driver_not_loaded", NVML_ERROR_DRIVER_NOT_LOADED},
        {"timeout", NVML_ERROR_TIMEOUT},
        {"function_not_found", NVML_ERROR_FUNCTION_NOT_FOUND},
        {"gpu_is_lost", NVML_ERROR_GPU_IS_LOST},
        {"reset_required", NVML_ERROR_RESET_REQUIRED},
        {"unknown", NVML_ERROR_UNKNOWN},
    };
    if (!n) return NVML_SUCCESS;
    if (n->type == J_NUM) return (nvmlReturn_t)n->num;
    if (n->type == J_STR)
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (!strcmp(n->str, names[i].name)) return names[i].code;
    return NVML_ERROR_UNKNOWN;
}

static int load_overrides(const jnode *obj, override *out) {
    int count = 0;
    if (!obj || obj->type != J_OBJ) return 0;
    for (int i = 0; i < obj->count && count < MAX_OVERRIDES; i++) {
        snprintf(out[count].function, sizeof out[count].function, "%s", obj->keys[i]);
        out[count].code = error_code(obj->items[i]);
        count++;
    }
    return count;
}

static void load_device(const jnode *d, int index, fake_device *dev) {
    char fallback[NAME_LEN];
    snprintf(fallback, sizeof fallback, "GPU-00000000-0000-0000-0000-%012d", index);
    jstr(d, "uuid", dev->uuid, fallback);
    jstr(d, "name", dev->name, "NVIDIA H100 80GB HBM3");
    dev->temperature = (unsigned)jnum(d, "temperature", 40);
    dev->slowdown_temperature = (unsigned)jnum(d, "slowdown_temperature", 87);
    dev->shutdown_temperature = (unsigned)jnum(d, "shutdown_temperature", 92);
    dev->ecc[0][0] = (unsigned long long)jnum(d, "ecc_corrected_volatile", 0);
    dev->ecc[0][1] = (unsigned long long)jnum(d, "ecc_corrected_aggregate", 0);
    dev->ecc[1][0] = (unsigned long long)jnum(d, "ecc_uncorrected_volatile", 0);
    dev->ecc[1][1] = (unsigned long long)jnum(d, "ecc_uncorrected_aggregate", 0);
    dev->remapped[0] = (unsigned)jnum(d, "remapped_rows_corrected", 0);
    dev->remapped[1] = (unsigned)jnum(d, "remapped_rows_uncorrected", 0);
    dev->remapped[2] = (unsigned)jnum(d, "remapped_rows_pending", 0);
    dev->remapped[3] = (unsigned)jnum(d, "remapped_rows_failure", 0);
    dev->retired_pending = (unsigned)jnum(d, "retired_pages_pending", 0);
    dev->clocks_event_reasons = (unsigned long long)jnum(d, "clocks_event_reasons", 0);
    dev->pcie_width = (unsigned)jnum(d, "pcie_width", 16);
    dev->pcie_max_width = (unsigned)jnum(d, "pcie_max_width", 16);
    dev->recovery_action = (int)jnum(d, "recovery_action", 0);
    /* Default: XID critical errors and double-bit ECC, as a data-centre GPU. */
    dev->supported_events = (unsigned long long)jnum(d, "supported_events", 0x8 | 0x2 | 0x1);
    jnode *links = jget(d, "nvlinks");
    dev->nvlink_count = 0;
    if (links && links->type == J_ARR)
        for (int i = 0; i < links->count && i < MAX_LINKS; i++)
            dev->nvlink[dev->nvlink_count++] = (unsigned)links->items[i]->num;
    jnode *mig = jget(d, "mig");
    dev->mig_mode = mig && mig->type == J_ARR ? 1 : (int)jnum(d, "mig_mode", 0);
    dev->mig_count = 0;
    if (mig && mig->type == J_ARR)
        for (int i = 0; i < mig->count && i < MAX_MIG; i++) {
            fake_mig *m = &dev->mig[dev->mig_count++];
            snprintf(fallback, sizeof fallback, "MIG-%08d-0000-0000-0000-%012d", index, i);
            jstr(mig->items[i], "uuid", m->uuid, fallback);
            m->gi = (unsigned)jnum(mig->items[i], "gpu_instance_id", i + 1);
            m->ci = (unsigned)jnum(mig->items[i], "compute_instance_id", 0);
        }
    dev->override_count = load_overrides(jget(d, "errors"), dev->overrides);
    if (jnum(d, "lost", 0)) {
        /* A GPU off the bus answers every call on its handle with GPU_IS_LOST. */
        snprintf(dev->overrides[dev->override_count].function, 64, "%s", "**");
        dev->overrides[dev->override_count++].code = NVML_ERROR_GPU_IS_LOST;
    }
}

static scenario *parse_scenario(const char *text, size_t len) {
    jparser ps = {text, text + len, 0};
    jnode *root = jvalue(&ps, 0);
    if (ps.failed || !root || root->type != J_OBJ) {
        jfree(root);
        return NULL;
    }
    scenario *s = calloc(1, sizeof(scenario));
    s->init = error_code(jget(root, "init"));
    s->event_wait = error_code(jget(root, "event_wait"));
    jstr(root, "driver_version", s->driver_version, "570.133.20");
    jnode *devices = jget(root, "devices");
    if (devices && devices->type == J_ARR)
        for (int i = 0; i < devices->count && i < MAX_DEVICES; i++)
            load_device(devices->items[i], i, &s->devices[s->count++]);
    s->device_count = (int)jnum(root, "device_count", -1);
    s->override_count = load_overrides(jget(root, "errors"), s->overrides);
    jnode *events = jget(root, "events");
    if (events && events->type == J_ARR)
        for (int i = 0; i < events->count && i < MAX_EVENTS; i++) {
            jnode *e = events->items[i];
            fake_event *ev = &s->events[s->event_count++];
            ev->id = (long long)jnum(e, "id", i + 1);
            ev->gpu = (int)jnum(e, "gpu", 0);
            ev->type = (unsigned long long)jnum(e, "type", 0x8);
            ev->data = (unsigned long long)jnum(e, "data", 0);
            ev->gi = (unsigned)jnum(e, "gpu_instance_id", NO_INSTANCE);
            ev->ci = (unsigned)jnum(e, "compute_instance_id", NO_INSTANCE);
        }
    jfree(root);
    return s;
}

/* Re-read the scenario when its file changed. Called with `lock` held. A file that
 * cannot be parsed keeps the previous scenario (a writer that does not rename
 * atomically is caught on its next change). */
static void refresh(void) {
    const char *path = getenv("SWARMOPS_FAKE_NVML_SCENARIO");
    struct stat st;
    if (!path || stat(path, &st) != 0) {
        free(current);
        current = NULL;
        have_seen = 0;
        return;
    }
    if (have_seen && st.st_ino == seen.st_ino && st.st_size == seen.st_size &&
        st.st_mtim.tv_sec == seen.st_mtim.tv_sec && st.st_mtim.tv_nsec == seen.st_mtim.tv_nsec)
        return;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    char *text = malloc((size_t)st.st_size + 1);
    size_t len = fread(text, 1, (size_t)st.st_size, f);
    fclose(f);
    scenario *next = parse_scenario(text, len);
    free(text);
    if (!next) {
        fprintf(stderr, "fake-nvml: %s is not a valid scenario; keeping the previous one\n", path);
        seen = st;
        have_seen = 1;
        return;
    }
    free(current);
    current = next;
    seen = st;
    have_seen = 1;
}

/* ---- Helpers for the entry points -------------------------------------------- */

static int device_count(void) {
    if (!current) return 0;
    return current->device_count >= 0 && current->device_count < current->count
               ? current->device_count
               : current->count;
}

/* Calls that enumerate devices are never failed by a "*" override: "NotSupported
 * everywhere" means every health check, not the device list. */
static int overridable(const char *function) {
    static const char *never[] = {
        "nvmlDeviceGetCount_v2", "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetUUID",
        "nvmlDeviceGetName", "nvmlDeviceGetMigDeviceHandleByIndex",
        "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
    };
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        if (!strcmp(function, never[i])) return 0;
    return 1;
}

static nvmlReturn_t find_override(const override *list, int count, const char *function) {
    for (int i = 0; i < count; i++)
        if (!strcmp(list[i].function, function)) return list[i].code;
    for (int i = 0; i < count; i++)
        if (!strcmp(list[i].function, "**") ||
            (!strcmp(list[i].function, "*") && overridable(function)))
            return list[i].code;
    return NVML_SUCCESS;
}

/* Validate `handle` and apply the scenario's error overrides for `function`; on
 * success *out points at the device (the parent GPU for a MIG handle). */
static nvmlReturn_t enter(const char *function, nvmlDevice_t handle, fake_device **out) {
    refresh();
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!current) return NVML_ERROR_DRIVER_NOT_LOADED;
    if (!handle || (handle->kind != 1 && handle->kind != 2) || handle->gpu < 0 ||
        handle->gpu >= current->count)
        return NVML_ERROR_INVALID_ARGUMENT;
    fake_device *dev = &current->devices[handle->gpu];
    nvmlReturn_t code = find_override(dev->overrides, dev->override_count, function);
    if (code == NVML_SUCCESS)
        code = find_override(current->overrides, current->override_count, function);
    if (code != NVML_SUCCESS) return code;
    if (handle->kind == 2 && handle->mig >= dev->mig_count) return NVML_ERROR_INVALID_ARGUMENT;
    *out = dev;
    return NVML_SUCCESS;
}

#define EXPORT __attribute__((visibility("default")))
#define BEGIN(handle)                                            \
    fake_device *dev = NULL;                                     \
    pthread_mutex_lock(&lock);                                   \
    nvmlReturn_t rc = enter(__func__, (handle), &dev);           \
    if (rc != NVML_SUCCESS) {                                    \
        pthread_mutex_unlock(&lock);                             \
        return rc;                                               \
    }
#define END(value)                 \
    pthread_mutex_unlock(&lock);   \
    return (value)

static nvmlReturn_t copy_string(char *out, unsigned int length, const char *value) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(value) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

/* ---- Library lifecycle -------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    pthread_mutex_lock(&lock);
    refresh();
    nvmlReturn_t rc = current ? current->init : NVML_ERROR_DRIVER_NOT_LOADED;
    if (rc == NVML_SUCCESS) initialised++;
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&lock);
    nvmlReturn_t rc = initialised ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED;
    if (initialised) initialised--;
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    pthread_mutex_lock(&lock);
    refresh();
    nvmlReturn_t rc = !initialised ? NVML_ERROR_UNINITIALIZED
                      : !current   ? NVML_ERROR_DRIVER_NOT_LOADED
                                   : copy_string(version, length, current->driver_version);
    pthread_mutex_unlock(&lock);
    return rc;
}

/* ---- Devices -------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    pthread_mutex_lock(&lock);
    refresh();
    nvmlReturn_t rc = NVML_SUCCESS;
    if (!initialised) rc = NVML_ERROR_UNINITIALIZED;
    else if (!count) rc = NVML_ERROR_INVALID_ARGUMENT;
    else *count = (unsigned)device_count();
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    pthread_mutex_lock(&lock);
    refresh();
    nvmlReturn_t rc = NVML_SUCCESS;
    if (!initialised) rc = NVML_ERROR_UNINITIALIZED;
    else if (!device || index >= (unsigned)device_count()) rc = NVML_ERROR_INVALID_ARGUMENT;
    else {
        gpu_handles[index] = (fake_handle){1, (int)index, -1};
        *device = &gpu_handles[index];
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    BEGIN(device);
    const char *value = device->kind == 2 ? dev->mig[device->mig].uuid : dev->uuid;
    END(copy_string(uuid, length, value));
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    BEGIN(device);
    END(copy_string(name, length, dev->name));
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *temp) {
    BEGIN(device);
    if (!temp || sensor != 0) { END(NVML_ERROR_INVALID_ARGUMENT); }
    *temp = dev->temperature;
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t device, int threshold,
                                                      unsigned int *temp) {
    BEGIN(device);
    if (!temp) { END(NVML_ERROR_INVALID_ARGUMENT); }
    if (threshold == 0) *temp = dev->shutdown_temperature;
    else if (threshold == 1) *temp = dev->slowdown_temperature;
    else { END(NVML_ERROR_NOT_SUPPORTED); }
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, int errorType,
                                                int counterType, unsigned long long *count) {
    BEGIN(device);
    if (!count || errorType < 0 || errorType > 1 || counterType < 0 || counterType > 1) {
        END(NVML_ERROR_INVALID_ARGUMENT);
    }
    *count = dev->ecc[errorType][counterType];
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corrected,
                                              unsigned int *uncorrected, unsigned int *pending,
                                              unsigned int *failure) {
    BEGIN(device);
    if (!corrected || !uncorrected || !pending || !failure) { END(NVML_ERROR_INVALID_ARGUMENT); }
    *corrected = dev->remapped[0];
    *uncorrected = dev->remapped[1];
    *pending = dev->remapped[2];
    *failure = dev->remapped[3];
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetRetiredPagesPendingStatus(nvmlDevice_t device, int *pending) {
    BEGIN(device);
    if (!pending) { END(NVML_ERROR_INVALID_ARGUMENT); }
    *pending = dev->retired_pending ? 1 : 0;
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device,
                                                           unsigned long long *reasons) {
    BEGIN(device);
    if (!reasons) { END(NVML_ERROR_INVALID_ARGUMENT); }
    *reasons = dev->clocks_event_reasons;
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(nvmlDevice_t device, unsigned int *width) {
    BEGIN(device);
    if (!width) { END(NVML_ERROR_INVALID_ARGUMENT); }
    *width = dev->pcie_width;
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxPcieLinkWidth(nvmlDevice_t device, unsigned int *width) {
    BEGIN(device);
    if (!width) { END(NVML_ERROR_INVALID_ARGUMENT); }
    *width = dev->pcie_max_width;
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link,
                                             unsigned int *active) {
    BEGIN(device);
    if (!active) { END(NVML_ERROR_INVALID_ARGUMENT); }
    /* A GPU without NVLink, or a link it does not have, answers NOT_SUPPORTED. */
    if ((int)link >= dev->nvlink_count) { END(NVML_ERROR_NOT_SUPPORTED); }
    *active = dev->nvlink[link];
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int count,
                                             nvmlFieldValue_t *values) {
    BEGIN(device);
    if (!values || count < 0) { END(NVML_ERROR_INVALID_ARGUMENT); }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    for (int i = 0; i < count; i++) {
        values[i].timestamp = (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000;
        values[i].latencyUsec = 0;
        /* Per-field results, as NVML reports them: the call itself succeeds. */
        if (values[i].fieldId == NVML_FI_DEV_GET_GPU_RECOVERY_ACTION &&
            dev->recovery_action >= 0) {
            values[i].valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
            values[i].nvmlReturn = NVML_SUCCESS;
            values[i].value.ullVal = 0;
            values[i].value.uiVal = (unsigned)dev->recovery_action;
        } else {
            values[i].nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        }
    }
    END(NVML_SUCCESS);
}

/* ---- MIG ------------------------------------------------------------------------ */

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current_mode,
                                         unsigned int *pending_mode) {
    BEGIN(device);
    if (!current_mode || !pending_mode) { END(NVML_ERROR_INVALID_ARGUMENT); }
    *current_mode = *pending_mode = (unsigned)dev->mig_mode;
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    BEGIN(device);
    if (!count) { END(NVML_ERROR_INVALID_ARGUMENT); }
    *count = dev->mig_mode ? MAX_MIG : 0;
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                        nvmlDevice_t *mig) {
    BEGIN(device);
    if (!mig || device->kind != 1 || index >= MAX_MIG) { END(NVML_ERROR_INVALID_ARGUMENT); }
    /* Slots without an instance answer NOT_FOUND, as NVML does. */
    if (!dev->mig_mode || (int)index >= dev->mig_count) { END(NVML_ERROR_NOT_FOUND); }
    mig_handles[device->gpu][index] = (fake_handle){2, device->gpu, (int)index};
    *mig = &mig_handles[device->gpu][index];
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t mig,
                                                                 nvmlDevice_t *device) {
    BEGIN(mig);
    (void)dev;
    if (!device || mig->kind != 2) { END(NVML_ERROR_INVALID_ARGUMENT); }
    gpu_handles[mig->gpu] = (fake_handle){1, mig->gpu, -1};
    *device = &gpu_handles[mig->gpu];
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id) {
    BEGIN(device);
    if (!id || device->kind != 2) { END(NVML_ERROR_INVALID_ARGUMENT); }
    *id = dev->mig[device->mig].gi;
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id) {
    BEGIN(device);
    if (!id || device->kind != 2) { END(NVML_ERROR_INVALID_ARGUMENT); }
    *id = dev->mig[device->mig].ci;
    END(NVML_SUCCESS);
}

/* ---- Events ----------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device,
                                                     unsigned long long *types) {
    BEGIN(device);
    if (!types) { END(NVML_ERROR_INVALID_ARGUMENT); }
    *types = dev->supported_events;
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    pthread_mutex_lock(&lock);
    refresh();
    nvmlReturn_t rc = initialised ? NVML_ERROR_UNKNOWN : NVML_ERROR_UNINITIALIZED;
    for (int i = 0; initialised && set && i < MAX_SETS; i++)
        if (!sets[i].used) {
            memset(&sets[i], 0, sizeof sets[i]);
            sets[i].used = 1;
            *set = &sets[i];
            rc = NVML_SUCCESS;
            break;
        }
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long types,
                                             nvmlEventSet_t set) {
    BEGIN(device);
    if (!set || !set->used || device->kind != 1) { END(NVML_ERROR_INVALID_ARGUMENT); }
    /* NVML refuses a mask with types the device does not support. */
    if (types & ~dev->supported_events) { END(NVML_ERROR_NOT_SUPPORTED); }
    set->mask[device->gpu] |= types;
    END(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    pthread_mutex_lock(&lock);
    nvmlReturn_t rc = set && set->used ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT;
    if (set) set->used = 0;
    pthread_mutex_unlock(&lock);
    return rc;
}

static int delivered(const event_set *set, long long id) {
    for (int i = 0; i < set->delivered_count; i++)
        if (set->delivered[i] == id) return 1;
    return 0;
}

/* Deliver, once per event set, each scenario event whose GPU registered its type. */
static nvmlReturn_t next_event(event_set *set, nvmlEventData_t *data) {
    if (!current) return NVML_ERROR_TIMEOUT;
    if (current->event_wait != NVML_SUCCESS) return current->event_wait;
    for (int i = 0; i < current->event_count; i++) {
        fake_event *ev = &current->events[i];
        if (ev->gpu < 0 || ev->gpu >= current->count || !(set->mask[ev->gpu] & ev->type) ||
            delivered(set, ev->id))
            continue;
        if (set->delivered_count < MAX_EVENTS) set->delivered[set->delivered_count++] = ev->id;
        gpu_handles[ev->gpu] = (fake_handle){1, ev->gpu, -1};
        data->device = &gpu_handles[ev->gpu];
        data->eventType = ev->type;
        data->eventData = ev->data;
        data->gpuInstanceId = ev->gi;
        data->computeInstanceId = ev->ci;
        return NVML_SUCCESS;
    }
    return NVML_ERROR_TIMEOUT;
}

EXPORT nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data,
                                        unsigned int timeoutms) {
    struct timespec start, now, nap = {0, 10 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        pthread_mutex_lock(&lock);
        refresh();
        nvmlReturn_t rc = !initialised                    ? NVML_ERROR_UNINITIALIZED
                          : !set || !set->used || !data   ? NVML_ERROR_INVALID_ARGUMENT
                                                          : next_event(set, data);
        pthread_mutex_unlock(&lock);
        if (rc != NVML_ERROR_TIMEOUT) return rc;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long waited = (now.tv_sec - start.tv_sec) * 1000LL +
                           (now.tv_nsec - start.tv_nsec) / 1000000LL;
        if (waited >= (long long)timeoutms) return NVML_ERROR_TIMEOUT;
        nanosleep(&nap, NULL);
    }
}

EXPORT nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_t *data,
                                     unsigned int timeoutms) {
    return nvmlEventSetWait_v2(set, data, timeoutms);
}
