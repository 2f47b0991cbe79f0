/* collector._rrdbatch: librrd's rrd_fetch_r over many files in one call.
 *
 * collector/rrd_fast.py fetches thousands of RRD files per round. Through ctypes every file
 * costs six foreign calls and their Python bookkeeping, about as much again as librrd's own
 * work; this loop makes them in C, without the GIL, and copies each file's doubles straight
 * into the caller's array. What it hands back is what rrd_fast needs to build its chunks:
 * per file a status and librrd's start, end, step and DS count; the DS names only where they
 * differ from the previous readable file's; librrd's message for each file it could not read.
 *
 * fetch_into(paths, cf, start, end, resolution, values, slot, meta) -> (names, errors)
 *   paths       sequence of bytes (file names)
 *   cf          bytes, the consolidation function
 *   values      writable C-contiguous buffer of at least len(paths) * slot doubles
 *   slot        doubles reserved per file: file i's rows x DS go to values[i * slot ...]
 *   meta        writable C-contiguous buffer of len(paths) * 5 int64:
 *               status (0 read and copied, 1 librrd error, 2 read but larger than its slot,
 *               not copied), start, end, step, DS count (as librrd returned them)
 *   names       list of (index, b"name\nname...") where the DS list changes
 *   errors      list of (index, message bytes)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <rrd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { STATUS_OK = 0, STATUS_ERROR = 1, STATUS_TOO_BIG = 2, META_FIELDS = 5 };

typedef struct {
    Py_ssize_t index;
    char *text; /* malloc'd */
} Note;

typedef struct {
    Note *items;
    size_t count, capacity;
} Notes;

static int notes_add(Notes *notes, Py_ssize_t index, char *text)
{
    if (notes->count == notes->capacity) {
        size_t capacity = notes->capacity ? 2 * notes->capacity : 16;
        Note *items = realloc(notes->items, capacity * sizeof(Note));
        if (items == NULL)
            return -1;
        notes->items = items;
        notes->capacity = capacity;
    }
    notes->items[notes->count].index = index;
    notes->items[notes->count].text = text;
    notes->count++;
    return 0;
}

static void notes_free(Notes *notes)
{
    for (size_t i = 0; i < notes->count; i++)
        free(notes->items[i].text);
    free(notes->items);
}

static PyObject *notes_list(const Notes *notes)
{
    PyObject *list = PyList_New((Py_ssize_t)notes->count);
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < notes->count; i++) {
        PyObject *item = Py_BuildValue("(ny)", notes->items[i].index, notes->items[i].text);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

/* The DS names joined with '\n' (DS names are [a-zA-Z0-9_]), malloc'd. */
static char *joined_names(char **names, unsigned long count)
{
    size_t length = 1;
    for (unsigned long i = 0; i < count; i++)
        length += strlen(names[i] ? names[i] : "") + 1;
    char *text = malloc(length);
    if (text == NULL)
        return NULL;
    char *at = text;
    for (unsigned long i = 0; i < count; i++) {
        const char *name = names[i] ? names[i] : "";
        size_t size = strlen(name);
        memcpy(at, name, size);
        at += size;
        if (i + 1 < count)
            *at++ = '\n';
    }
    *at = '\0';
    return text;
}

static void free_names(char **names, unsigned long count)
{
    if (names == NULL)
        return;
    for (unsigned long i = 0; i < count; i++)
        free(names[i]);
    free(names);
}

typedef struct {
    const char *cf;
    long start, end;
    unsigned long resolution;
    double *values;
    Py_ssize_t slot;
    int64_t *meta;
} Request;

/* The loop, without the GIL. Returns 0, or -1 when memory ran out. */
static int fetch_all(const Request *request, const char **paths, Py_ssize_t count,
                     Notes *names_notes, Notes *error_notes)
{
    char *previous = NULL; /* the last readable file's joined names (owned by names_notes) */
    for (Py_ssize_t i = 0; i < count; i++) {
        time_t start = request->start, end = request->end;
        unsigned long step = request->resolution, ds_count = 0;
        char **names = NULL;
        rrd_value_t *data = NULL;
        int64_t *meta = request->meta + i * META_FIELDS;
        rrd_clear_error();
        if (rrd_fetch_r(paths[i], request->cf, &start, &end, &step, &ds_count, &names, &data)
            != 0) {
            const char *message = rrd_get_error();
            char *copy = strdup(message && *message ? message : "unknown librrd error");
            rrd_clear_error();
            if (copy == NULL || notes_add(error_notes, i, copy) != 0) {
                free(copy);
                return -1;
            }
            meta[0] = STATUS_ERROR;
            meta[1] = meta[2] = meta[3] = meta[4] = 0;
            continue;
        }
        char *joined = joined_names(names, ds_count);
        free_names(names, ds_count);
        if (joined == NULL) {
            free(data);
            return -1;
        }
        if (previous != NULL && strcmp(previous, joined) == 0) {
            free(joined);
        } else {
            if (notes_add(names_notes, i, joined) != 0) {
                free(joined);
                free(data);
                return -1;
            }
            previous = joined;
        }
        int64_t rows = step ? ((int64_t)end - (int64_t)start) / (int64_t)step : 0;
        int64_t doubles = rows * (int64_t)ds_count;
        if (doubles < 0 || doubles > request->slot) {
            meta[0] = STATUS_TOO_BIG;
        } else {
            memcpy(request->values + i * request->slot, data, (size_t)doubles * sizeof(double));
            meta[0] = STATUS_OK;
        }
        free(data);
        meta[1] = start;
        meta[2] = end;
        meta[3] = (int64_t)step;
        meta[4] = (int64_t)ds_count;
    }
    return 0;
}

static int writable(PyObject *object, Py_buffer *view, Py_ssize_t itemsize, Py_ssize_t needed,
                    const char *what)
{
    if (PyObject_GetBuffer(object, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0)
        return -1;
    if (view->len < needed * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, needs %zd", what, view->len,
                     needed * itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *fetch_into(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *paths_object, *values_object, *meta_object;
    const char *cf;
    long start, end;
    unsigned long resolution;
    Py_ssize_t slot;
    if (!PyArg_ParseTuple(args, "OyllkOnO", &paths_object, &cf, &start, &end, &resolution,
                          &values_object, &slot, &meta_object))
        return NULL;
    if (slot < 0) {
        PyErr_SetString(PyExc_ValueError, "slot must be >= 0");
        return NULL;
    }
    PyObject *paths = PySequence_Tuple(paths_object); /* holds the bytes while unlocked */
    if (paths == NULL)
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(paths);
    const char **pointers = PyMem_Malloc((size_t)(count ? count : 1) * sizeof(char *));
    if (pointers == NULL) {
        Py_DECREF(paths);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *path = PyTuple_GET_ITEM(paths, i);
        if (!PyBytes_Check(path)) {
            PyErr_Format(PyExc_TypeError, "path %zd is not bytes", i);
            PyMem_Free(pointers);
            Py_DECREF(paths);
            return NULL;
        }
        pointers[i] = PyBytes_AS_STRING(path);
    }
    Py_buffer values, meta;
    if (writable(values_object, &values, sizeof(double), count * slot, "values") != 0) {
        PyMem_Free(pointers);
        Py_DECREF(paths);
        return NULL;
    }
    if (writable(meta_object, &meta, sizeof(int64_t), count * META_FIELDS, "meta") != 0) {
        PyBuffer_Release(&values);
        PyMem_Free(pointers);
        Py_DECREF(paths);
        return NULL;
    }
    Request request = {cf, start, end, resolution, values.buf, slot, meta.buf};
    Notes names_notes = {0}, error_notes = {0};
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = fetch_all(&request, pointers, count, &names_notes, &error_notes);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&meta);
    PyBuffer_Release(&values);
    PyMem_Free(pointers);
    Py_DECREF(paths);
    PyObject *result = NULL;
    if (failed) {
        PyErr_NoMemory();
    } else {
        PyObject *names = notes_list(&names_notes);
        PyObject *errors = names ? notes_list(&error_notes) : NULL;
        if (errors != NULL)
            result = PyTuple_Pack(2, names, errors);
        Py_XDECREF(names);
        Py_XDECREF(errors);
    }
    notes_free(&names_notes);
    notes_free(&error_notes);
    return result;
}

static PyMethodDef methods[] = {
    {"fetch_into", fetch_into, METH_VARARGS,
     "fetch_into(paths, cf, start, end, resolution, values, slot, meta) -> (names, errors)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "collector._rrdbatch",
    "librrd's rrd_fetch_r over many files in one call (see collector.rrd_fast).", -1, methods,
};

PyMODINIT_FUNC PyInit__rrdbatch(void) { return PyModule_Create(&module); }
