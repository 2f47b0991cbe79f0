/* collector.statusdump._scan: one pass over a status dump, for the lines in the strict form.
 *
 * The polars parser of collector/statusdump/textparser.py handles every line, damaged ones included,
 * with a finding per bad line; on 10,000 guests it takes about 50 ms, mostly splitting the
 * text into string columns and casting them. A line in the strict form (what pvestatd
 * writes) needs none of that: this scanner reads those in one pass and lists the numbers of
 * the other lines, which the caller gives to the polars parser. So the scanner never has to
 * decide what a damaged line means: it only accepts lines the polars parser would read
 * without a finding, with the same values.
 *
 * scan(data, prefixes, kinds) -> (per_kind, declined)
 *   data      bytes: the dump, UTF-8.
 *   prefixes  sequence of (prefix: bytes, kind: int, current: bool, fields: int): the key
 *             prefixes, which kind (index into kinds) each describes, whether it is the
 *             current generation, and how many fields follow its key.
 *   kinds     sequence of (roles: bytes, id_rule: bytes): one role per field after the key
 *             (of the longest generation) and the rule for the id after "<prefix>/".
 *   Roles: 'n' number ("U" for unknown, else -?D+(.D+)?([eE][-+]?D+)?, finite), 't' ctime
 *   (1 to 15 ASCII digits), 'b' flag ("0" or "1"), 's' text (may be empty), 'S' text (not
 *   empty), 'x' ignored. Id rules: 'a' not empty, 'd' ASCII digits, 't' "<a>/<b>", both not
 *   empty. Fields past a line's count (older generations) are unknown numbers.
 *   per_kind  for each kind, (ids: list[str], numbers: bytes, texts: tuple[list[str], ...],
 *             current: bytes, lines: bytes), one entry per accepted line in line order:
 *             numbers float64 column after column, one column per n/t/b role in field order,
 *             NaN for unknown; texts one list per s/S role; current one byte (0/1); lines the
 *             1-based line numbers as int64.
 *   declined  list[int]: the 1-based numbers of the non-empty lines not in the strict form.
 *
 * The strict form: lines end at "\n" (empty lines are skipped); the key (up to the first
 * ":") is printable ASCII; no byte below 0x20 nor 0x7f in the line; exactly the prefix's
 * field count; every field as its role says.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 64
#define MAX_NUMBER_LENGTH 64
#define MAX_CTIME_DIGITS 15

typedef struct {
    const char *text;
    Py_ssize_t length;
    Py_ssize_t kind;
    int current;
    Py_ssize_t fields;
} Prefix;

typedef struct {
    char roles[MAX_FIELDS];
    Py_ssize_t role_count;
    char id_rule;
    Py_ssize_t numeric_count;
    Py_ssize_t text_count;
    PyObject *ids;
    PyObject *texts[MAX_FIELDS];
    /* each text column's last value and where it was read: a repeat (a status) reuses it */
    PyObject *last_text[MAX_FIELDS];
    const char *last_start[MAX_FIELDS];
    Py_ssize_t last_length[MAX_FIELDS];
    double *numbers;
    unsigned char *current;
    long long *lines;
    Py_ssize_t rows, capacity;
} Kind;

typedef struct {
    Prefix *prefixes;
    Py_ssize_t prefix_count;
    Kind *kinds;
    Py_ssize_t kind_count;
} Scan;

enum { DECLINE = 0, ACCEPT = 1, FAILED = -1 };

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static Py_ssize_t digits(const char *s, Py_ssize_t i, Py_ssize_t n) {
    while (i < n && is_digit(s[i])) i++;
    return i;
}

static const double powers_of_ten[] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};
#define EXACT_POWERS 22
#define EXACT_MANTISSA (1ULL << 53)

/* The value of a number in the strict form. Most dump numbers have few digits: an integer
 * mantissa below 2^53 times an exactly representable power of ten, whose product or
 * quotient is correctly rounded by one IEEE operation (Clinger's fast path). The others go
 * through CPython's correctly rounded parser. Either way the value is the nearest double,
 * as polars' string cast gives. */
/* Reads the ASCII digits from s[*i] on into *mantissa (flagging *inexact once it no longer
 * fits); returns how many there were. */
static Py_ssize_t read_digits(const char *s, Py_ssize_t *i, Py_ssize_t n,
                              unsigned long long *mantissa, int *inexact) {
    Py_ssize_t first = *i;
    for (; *i < n; (*i)++) {
        unsigned digit = (unsigned)((unsigned char)s[*i] - '0');
        if (digit > 9) break;
        if (*mantissa > (~0ULL - 9) / 10) *inexact = 1;
        else *mantissa = *mantissa * 10 + digit;
    }
    return *i - first;
}

static int strict_number(const char *s, Py_ssize_t n, double *out) {
    Py_ssize_t i = 0;
    int negative = 0, inexact = 0;
    unsigned long long mantissa = 0;
    long exponent = 0;
    if (n > MAX_NUMBER_LENGTH) return DECLINE;
    if (i < n && s[i] == '-') {
        negative = 1;
        i++;
    }
    if (read_digits(s, &i, n, &mantissa, &inexact) == 0) return DECLINE;
    if (i < n && s[i] == '.') {
        i++;
        Py_ssize_t fraction = read_digits(s, &i, n, &mantissa, &inexact);
        if (fraction == 0) return DECLINE;
        exponent = -(long)fraction;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        int exponent_negative = 0;
        if (i < n && (s[i] == '-' || s[i] == '+')) exponent_negative = s[i++] == '-';
        unsigned long long written = 0;
        int too_large = 0;
        if (read_digits(s, &i, n, &written, &too_large) == 0) return DECLINE;
        if (too_large || written > 100000) written = 100000; /* far past any double */
        exponent += exponent_negative ? -(long)written : (long)written;
    }
    if (i != n) return DECLINE;
    if (!inexact && mantissa <= EXACT_MANTISSA && exponent >= -EXACT_POWERS &&
        exponent <= EXACT_POWERS) {
        double value = (double)mantissa;
        value = exponent < 0 ? value / powers_of_ten[-exponent] : value * powers_of_ten[exponent];
        *out = negative ? -value : value;
        return ACCEPT;
    }
    char text[MAX_NUMBER_LENGTH + 1];
    memcpy(text, s, (size_t)n);
    text[n] = '\0';
    char *end = NULL;
    double value = PyOS_string_to_double(text, &end, NULL);
    if (value == -1.0 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) return FAILED;
        PyErr_Clear();
        return DECLINE;
    }
    if (end != text + n || !isfinite(value)) return DECLINE;
    *out = value;
    return ACCEPT;
}

static int ctime_value(const char *s, Py_ssize_t n, double *out) {
    if (n < 1 || n > MAX_CTIME_DIGITS || digits(s, 0, n) != n) return DECLINE;
    long long value = 0;
    for (Py_ssize_t i = 0; i < n; i++) value = value * 10 + (s[i] - '0');
    *out = (double)value;
    return ACCEPT;
}

static int valid_id(char rule, const char *s, Py_ssize_t n) {
    if (n < 1) return 0;
    if (rule == 'd') return digits(s, 0, n) == n;
    if (rule == 't') {
        const char *slash = memchr(s, '/', (size_t)n);
        if (slash == NULL || slash == s || slash == s + n - 1) return 0;
        return memchr(slash + 1, '/', (size_t)(s + n - slash - 1)) == NULL;
    }
    return 1;
}

static const Prefix *find_prefix(const Scan *scan, const char *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < scan->prefix_count; i++) {
        const Prefix *prefix = &scan->prefixes[i];
        if (prefix->length == n && memcmp(prefix->text, s, (size_t)n) == 0) return prefix;
    }
    return NULL;
}

/* Room for one more row. The first call makes room for every line of the dump (pages never
 * written are never touched), so a dump needs no copying reallocation. */
static int grow(Kind *kind, Py_ssize_t lines) {
    if (kind->rows < kind->capacity) return 0;
    Py_ssize_t capacity = kind->capacity ? 2 * kind->capacity : lines;
    size_t width = (size_t)(kind->numeric_count ? kind->numeric_count : 1);
    double *numbers = realloc(kind->numbers, (size_t)capacity * width * sizeof(double));
    if (numbers == NULL) return -1;
    kind->numbers = numbers;
    unsigned char *current = realloc(kind->current, (size_t)capacity);
    if (current == NULL) return -1;
    kind->current = current;
    long long *lines_of_rows = realloc(kind->lines, (size_t)capacity * sizeof(long long));
    if (lines_of_rows == NULL) return -1;
    kind->lines = lines_of_rows;
    kind->capacity = capacity;
    return 0;
}

/* The text of a field; a repeat of the column's previous value (a status) is that object. */
static PyObject *text_of(Kind *kind, Py_ssize_t t, const char *s, Py_ssize_t n) {
    PyObject *text = kind->last_text[t];
    if (text != NULL && kind->last_length[t] == n && memcmp(kind->last_start[t], s, (size_t)n) == 0) {
        Py_INCREF(text);
        return text;
    }
    return PyUnicode_DecodeUTF8(s, n, "strict");
}

static int is_control(unsigned char c) { return c < 0x20 || c == 0x7f; }

static int scan_line(Scan *scan, const char *line, Py_ssize_t length, Py_ssize_t lineno,
                     Py_ssize_t lines) {
    const char *end = line + length, *colon = line;
    while (colon < end && *colon != ':') {
        unsigned char c = (unsigned char)*colon++;
        if (c <= 0x20 || c >= 0x7f) return DECLINE;
    }
    if (colon == end) return DECLINE;
    const char *slash = memchr(line, '/', (size_t)(colon - line));
    if (slash == NULL) return DECLINE;
    const Prefix *prefix = find_prefix(scan, line, slash - line);
    if (prefix == NULL) return DECLINE;
    Kind *kind = &scan->kinds[prefix->kind];
    const char *id = slash + 1;
    if (!valid_id(kind->id_rule, id, colon - id)) return DECLINE;

    const char *starts[MAX_FIELDS];
    Py_ssize_t lengths[MAX_FIELDS];
    Py_ssize_t count = 0;
    const char *field = colon + 1;
    for (;;) {
        if (count == prefix->fields) return DECLINE;
        const char *next = memchr(field, ':', (size_t)(end - field));
        const char *stop = next ? next : end;
        starts[count] = field;
        lengths[count] = stop - field;
        count++;
        if (next == NULL) break;
        field = next + 1;
    }
    if (count != prefix->fields) return DECLINE;

    if (grow(kind, lines) < 0) {
        PyErr_NoMemory();
        return FAILED;
    }
    double *row = kind->numbers + kind->rows * kind->numeric_count;
    Py_ssize_t column = 0;
    for (Py_ssize_t i = 0; i < kind->role_count; i++) {
        char role = kind->roles[i];
        if (role != 'n' && role != 't' && role != 'b') continue;
        double value = NAN;
        int verdict = ACCEPT;
        if (i < count) {
            const char *s = starts[i];
            Py_ssize_t n = lengths[i];
            if (role == 't') {
                verdict = ctime_value(s, n, &value);
            } else if (role == 'b') {
                if (n == 1 && (s[0] == '0' || s[0] == '1')) value = s[0] - '0';
                else verdict = DECLINE;
            } else if (!(n == 1 && s[0] == 'U')) {
                verdict = strict_number(s, n, &value);
            }
        }
        if (verdict != ACCEPT) return verdict;
        row[column++] = value;
    }
    /* the number roles admit no control byte; the others are checked here */
    for (Py_ssize_t i = 0; i < count; i++) {
        char role = kind->roles[i];
        if (role != 's' && role != 'S' && role != 'x') continue;
        if (role == 'S' && lengths[i] == 0) return DECLINE;
        for (Py_ssize_t j = 0; j < lengths[i]; j++) {
            if (is_control((unsigned char)starts[i][j])) return DECLINE;
        }
    }

    /* every object of the row first, so that a declined text leaves nothing behind */
    PyObject *objects[MAX_FIELDS + 1];
    Py_ssize_t made = 0;
    int verdict = ACCEPT;
    objects[made] = PyUnicode_DecodeASCII(id, colon - id, "strict");
    if (objects[made] == NULL) return FAILED;
    made++;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (kind->roles[i] != 's' && kind->roles[i] != 'S') continue;
        objects[made] = text_of(kind, made - 1, starts[i], lengths[i]);
        if (objects[made] == NULL) {
            verdict = PyErr_ExceptionMatches(PyExc_UnicodeDecodeError) ? DECLINE : FAILED;
            if (verdict == DECLINE) PyErr_Clear();
            break;
        }
        made++;
    }
    if (verdict == ACCEPT) {
        PyObject *list = kind->ids;
        for (Py_ssize_t m = 0; m < made && verdict == ACCEPT; m++) {
            if (m > 0) list = kind->texts[m - 1];
            if (PyList_Append(list, objects[m]) < 0) verdict = FAILED;
        }
    }
    if (verdict == ACCEPT) {
        for (Py_ssize_t t = 0; t < kind->text_count; t++) {
            kind->last_text[t] = objects[t + 1]; /* borrowed: the list holds it */
        }
        Py_ssize_t t = 0;
        for (Py_ssize_t i = 0; i < count; i++) {
            if (kind->roles[i] != 's' && kind->roles[i] != 'S') continue;
            kind->last_start[t] = starts[i];
            kind->last_length[t] = lengths[i];
            t++;
        }
        kind->current[kind->rows] = (unsigned char)prefix->current;
        kind->lines[kind->rows] = (long long)lineno;
        kind->rows++;
    }
    for (Py_ssize_t m = 0; m < made; m++) Py_DECREF(objects[m]);
    return verdict;
}

static void free_scan(Scan *scan) {
    for (Py_ssize_t k = 0; k < scan->kind_count; k++) {
        Kind *kind = &scan->kinds[k];
        Py_XDECREF(kind->ids);
        for (Py_ssize_t t = 0; t < kind->text_count; t++) Py_XDECREF(kind->texts[t]);
        free(kind->numbers);
        free(kind->current);
        free(kind->lines);
    }
    PyMem_Free(scan->kinds);
    PyMem_Free(scan->prefixes);
}

/* Fills scan from the arguments; the bytes in prefixes stay alive in their sequence. */
static int read_layout(Scan *scan, PyObject *prefixes, PyObject *kinds) {
    scan->kind_count = PySequence_Fast_GET_SIZE(kinds);
    scan->kinds = PyMem_Calloc((size_t)(scan->kind_count ? scan->kind_count : 1), sizeof(Kind));
    scan->prefix_count = PySequence_Fast_GET_SIZE(prefixes);
    scan->prefixes =
        PyMem_Calloc((size_t)(scan->prefix_count ? scan->prefix_count : 1), sizeof(Prefix));
    if (scan->kinds == NULL || scan->prefixes == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < scan->kind_count; k++) {
        Kind *kind = &scan->kinds[k];
        const char *roles, *rule;
        Py_ssize_t role_count, rule_length;
        PyObject *item = PySequence_Fast_GET_ITEM(kinds, k);
        if (!PyTuple_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "a kind must be a tuple (roles, id_rule)");
            return -1;
        }
        if (!PyArg_ParseTuple(item, "y#y#:kind", &roles, &role_count, &rule, &rule_length)) {
            return -1;
        }
        if (role_count > MAX_FIELDS || rule_length != 1 || strchr("adt", rule[0]) == NULL) {
            PyErr_SetString(PyExc_ValueError, "a kind has too many roles or a bad id rule");
            return -1;
        }
        memcpy(kind->roles, roles, (size_t)role_count);
        kind->role_count = role_count;
        kind->id_rule = rule[0];
        for (Py_ssize_t i = 0; i < role_count; i++) {
            if (roles[i] == '\0' || strchr("ntbsSx", roles[i]) == NULL) {
                PyErr_Format(PyExc_ValueError, "unknown role (byte %d)", (unsigned char)roles[i]);
                return -1;
            }
            if (strchr("ntb", roles[i]) != NULL) kind->numeric_count++;
            if (strchr("sS", roles[i]) != NULL) {
                kind->texts[kind->text_count] = PyList_New(0);
                if (kind->texts[kind->text_count] == NULL) return -1;
                kind->text_count++;
            }
        }
        kind->ids = PyList_New(0);
        if (kind->ids == NULL) return -1;
    }
    for (Py_ssize_t p = 0; p < scan->prefix_count; p++) {
        Prefix *prefix = &scan->prefixes[p];
        int current;
        PyObject *item = PySequence_Fast_GET_ITEM(prefixes, p);
        if (!PyTuple_Check(item)) {
            PyErr_SetString(PyExc_TypeError,
                            "a prefix must be a tuple (prefix, kind, current, fields)");
            return -1;
        }
        if (!PyArg_ParseTuple(item, "y#npn:prefix", &prefix->text, &prefix->length,
                              &prefix->kind, &current, &prefix->fields)) {
            return -1;
        }
        prefix->current = current;
        if (prefix->kind < 0 || prefix->kind >= scan->kind_count) {
            PyErr_SetString(PyExc_ValueError, "a prefix names a kind that does not exist");
            return -1;
        }
        const Kind *kind = &scan->kinds[prefix->kind];
        if (prefix->fields < 1 || prefix->fields > kind->role_count) {
            PyErr_SetString(PyExc_ValueError, "a prefix's field count exceeds its kind's roles");
            return -1;
        }
        for (Py_ssize_t i = prefix->fields; i < kind->role_count; i++) {
            if (kind->roles[i] != 'n' && kind->roles[i] != 'x') {
                PyErr_SetString(PyExc_ValueError,
                                "fields past a prefix's count must be numbers or ignored");
                return -1;
            }
        }
    }
    return 0;
}

/* The numbers column after column (they were gathered row after row). */
static PyObject *by_column(const Kind *kind) {
    Py_ssize_t rows = kind->rows, columns = kind->numeric_count;
    PyObject *out = PyBytes_FromStringAndSize(NULL, rows * columns * (Py_ssize_t)sizeof(double));
    if (out == NULL) return NULL;
    double *values = (double *)PyBytes_AS_STRING(out);
    for (Py_ssize_t row = 0; row < rows; row++) {
        const double *from = kind->numbers + row * columns;
        for (Py_ssize_t column = 0; column < columns; column++) {
            values[column * rows + row] = from[column];
        }
    }
    return out;
}

static PyObject *results(Scan *scan) {
    PyObject *out = PyList_New(scan->kind_count);
    if (out == NULL) return NULL;
    for (Py_ssize_t k = 0; k < scan->kind_count; k++) {
        Kind *kind = &scan->kinds[k];
        PyObject *texts = PyTuple_New(kind->text_count);
        if (texts == NULL) goto failed;
        for (Py_ssize_t t = 0; t < kind->text_count; t++) {
            Py_INCREF(kind->texts[t]);
            PyTuple_SET_ITEM(texts, t, kind->texts[t]);
        }
        PyObject *numbers = by_column(kind);
        if (numbers == NULL) {
            Py_DECREF(texts);
            goto failed;
        }
        /* y# gives None for a NULL pointer: a kind without rows has no buffers */
        const char *current = kind->current ? (const char *)kind->current : "";
        const char *lines = kind->lines ? (const char *)kind->lines : "";
        PyObject *item = Py_BuildValue("(ONNy#y#)", kind->ids, numbers, texts, current,
                                       kind->rows, lines,
                                       kind->rows * (Py_ssize_t)sizeof(long long));
        if (item == NULL) goto failed;
        PyList_SET_ITEM(out, k, item);
    }
    return out;
failed:
    Py_DECREF(out);
    return NULL;
}

static PyObject *scan_dump(PyObject *module, PyObject *args) {
    Py_buffer data;
    PyObject *prefix_argument, *kind_argument;
    if (!PyArg_ParseTuple(args, "y*OO:scan", &data, &prefix_argument, &kind_argument)) {
        return NULL;
    }
    PyObject *result = NULL, *declined = NULL;
    Scan scan = {0};
    PyObject *prefixes = PySequence_Fast(prefix_argument, "prefixes must be a sequence");
    PyObject *kinds = prefixes ? PySequence_Fast(kind_argument, "kinds must be a sequence") : NULL;
    if (kinds == NULL || read_layout(&scan, prefixes, kinds) < 0) goto done;

    declined = PyList_New(0);
    if (declined == NULL) goto done;
    const char *text = data.buf, *end = text + data.len;
    Py_ssize_t lineno = 0, lines = 1;
    for (const char *p = text; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++) lines++;
    while (text < end) {
        const char *newline = memchr(text, '\n', (size_t)(end - text));
        const char *stop = newline ? newline : end;
        lineno++;
        if (stop > text) {
            int verdict = scan_line(&scan, text, stop - text, lineno, lines);
            if (verdict == FAILED) goto done;
            if (verdict == DECLINE) {
                PyObject *number = PyLong_FromSsize_t(lineno);
                if (number == NULL || PyList_Append(declined, number) < 0) {
                    Py_XDECREF(number);
                    goto done;
                }
                Py_DECREF(number);
            }
        }
        text = newline ? newline + 1 : end;
    }
    PyObject *per_kind = results(&scan);
    if (per_kind != NULL) result = Py_BuildValue("(NO)", per_kind, declined);
done:
    Py_XDECREF(declined);
    free_scan(&scan);
    Py_XDECREF(kinds);
    Py_XDECREF(prefixes);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan_dump, METH_VARARGS,
     "scan(data, prefixes, kinds) -> (per-kind (ids, numbers, texts, current, lines), the "
     "numbers of the lines not in the strict form)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scan",
    "One-pass scanner of the strict-form lines of a status dump (see collector/statusdump/_scan.c).",
    -1,
    methods,
};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
