/* Usage ingestion's per-event arithmetic, in C: the ids derived from request ids, the events' keys and the binary
 * COPY of a staged batch.
 *
 * Each has a pure-Python twin that stays the reference (portal/usage/events.py derive_event_id,
 * portal/usage/services/ingest.py _keys_python and portal/usage/store.py _copy_data_python);
 * tests/portal/usage/test_native.py holds each pair to the same output, byte for byte, on random input, and to the
 * same refusals. In Python, measured on the benchmark's machine, a derived id costs about 2 µs (a hashlib object
 * and the formatting), a key about 1.3 µs, a row of the COPY about 1.9 µs (one struct.pack of 41 arguments); here
 * each is a loop over a column.
 *
 * event_ids(prefix, names) -> list[str]
 *   str(uuid.uuid5(namespace, source + "|" + name)) for each name, given prefix = namespace.bytes + (source +
 *   "|").encode(): the SHA-1 of prefix + name.encode() with the version (5) and variant (RFC 4122) bits set, as
 *   lowercase 8-4-4-4-12 hex (RFC 4122 section 4.3; Python's uuid.uuid5). SHA-1 as FIPS 180-4 specifies it.
 *
 * copy_rows(columns) -> bytes
 *   columns: the 19 lists of store.StagedBatch before `details` (event_times ... quarantines), all of one length.
 *   The payload is PostgreSQL's binary COPY of usage_event_stage (PostgreSQL docs, "COPY", "Binary Format"): the
 *   signature, flags and header extension, then per row a 16-bit field count (20) and per field a 32-bit length
 *   and the value in network byte order, then a 16-bit -1. Row fields: position int4 (0..n-1), event_time int8
 *   (microseconds since 2000-01-01 UTC), key (the first 16 bytes of a bytes value of at least 16), source_id
 *   int4, six ids int4 (None as 0), cost int8 (None as -1), status int2, duration, time to first token and the
 *   five counts int4, quarantine int2 (None as -1 for all of those).
 *   Refuses (ValueError) a -1 where None is written as -1, as the Python twin does: it would be stored as absent.
 *   Refuses (OverflowError) a value outside its field's width, and (TypeError) an event time that is not a
 *   datetime in datetime.UTC, a key that is not bytes of at least 16, or any other value that is not an int.
 *
 * keys(prefix, event_ids) -> list[bytes]
 *   event_ids: a list or tuple of str. The first 16 bytes of SHA-256(prefix + id.encode()) for each id (store.event_key with the source's prefix
 *   "source\n"). SHA-256 as FIPS 180-4 specifies it; tested against hashlib.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <string.h>

#define COLUMNS 19
#define FIELDS 20

/* ---- SHA-256 (FIPS 180-4, section 6.2) ---------------------------------------------------------------- */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t state[8], const unsigned char block[64]) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) {
        w[i] = ((uint32_t)block[4 * i] << 24) | ((uint32_t)block[4 * i + 1] << 16) |
               ((uint32_t)block[4 * i + 2] << 8) | (uint32_t)block[4 * i + 3];
    }
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    state[0] += a; state[1] += b; state[2] += c; state[3] += d;
    state[4] += e; state[5] += f; state[6] += g; state[7] += h;
}

/* The digest of prefix + text, its first 16 bytes into out. */
static void sha256_two(const unsigned char *prefix, size_t prefix_size, const unsigned char *text,
                       size_t text_size, unsigned char out[16]) {
    uint32_t state[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    unsigned char block[64];
    size_t filled = 0;
    const unsigned char *parts[2] = {prefix, text};
    size_t sizes[2] = {prefix_size, text_size};
    for (int part = 0; part < 2; part++) {
        const unsigned char *data = parts[part];
        size_t left = sizes[part];
        while (left > 0) {
            size_t take = 64 - filled < left ? 64 - filled : left;
            memcpy(block + filled, data, take);
            filled += take;
            data += take;
            left -= take;
            if (filled == 64) {
                sha256_block(state, block);
                filled = 0;
            }
        }
    }
    uint64_t bits = ((uint64_t)prefix_size + (uint64_t)text_size) * 8;
    block[filled++] = 0x80;
    if (filled > 56) {
        memset(block + filled, 0, 64 - filled);
        sha256_block(state, block);
        filled = 0;
    }
    memset(block + filled, 0, 56 - filled);
    for (int i = 0; i < 8; i++) {
        block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    }
    sha256_block(state, block);
    for (int i = 0; i < 4; i++) {
        out[4 * i] = (unsigned char)(state[i] >> 24);
        out[4 * i + 1] = (unsigned char)(state[i] >> 16);
        out[4 * i + 2] = (unsigned char)(state[i] >> 8);
        out[4 * i + 3] = (unsigned char)state[i];
    }
}

static PyObject *keys(PyObject *module, PyObject *args) {
    Py_buffer prefix;
    PyObject *given;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*O:keys", &prefix, &given)) {
        return NULL;
    }
    PyObject *ids = PySequence_Fast(given, "event ids must be a sequence");
    if (ids == NULL) {
        PyBuffer_Release(&prefix);
        return NULL;
    }
    Py_ssize_t size = PySequence_Fast_GET_SIZE(ids);
    PyObject *result = PyList_New(size);
    if (result == NULL) {
        PyBuffer_Release(&prefix);
        Py_DECREF(ids);
        return NULL;
    }
    unsigned char digest[16];
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *id = PySequence_Fast_GET_ITEM(ids, i);
        if (!PyUnicode_Check(id)) {
            PyErr_SetString(PyExc_TypeError, "event ids must be str");
            goto fail;
        }
        Py_ssize_t length;
        const char *text = PyUnicode_AsUTF8AndSize(id, &length); /* str.encode()'s UTF-8; a lone surrogate fails */
        if (text == NULL) {
            goto fail;
        }
        sha256_two(prefix.buf, (size_t)prefix.len, (const unsigned char *)text, (size_t)length, digest);
        PyObject *key = PyBytes_FromStringAndSize((const char *)digest, 16);
        if (key == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(result, i, key);
    }
    PyBuffer_Release(&prefix);
    Py_DECREF(ids);
    return result;
fail:
    PyBuffer_Release(&prefix);
    Py_DECREF(ids);
    Py_DECREF(result);
    return NULL;
}

/* ---- SHA-1 (FIPS 180-4, section 6.1) and name-based UUIDs ------------------------------------------------- */

#define ROTL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static void sha1_block(uint32_t state[5], const unsigned char block[64]) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++) {
        w[i] = ((uint32_t)block[4 * i] << 24) | ((uint32_t)block[4 * i + 1] << 16) |
               ((uint32_t)block[4 * i + 2] << 8) | (uint32_t)block[4 * i + 3];
    }
    for (int i = 16; i < 80; i++) {
        w[i] = ROTL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3], e = state[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        uint32_t t = ROTL(a, 5) + f + e + k + w[i];
        e = d; d = c; c = ROTL(b, 30); b = a; a = t;
    }
    state[0] += a; state[1] += b; state[2] += c; state[3] += d; state[4] += e;
}

/* The SHA-1 of prefix + text, its first 16 bytes into out (a UUID is 16 bytes of it). */
static void sha1_two(const unsigned char *prefix, size_t prefix_size, const unsigned char *text, size_t text_size,
                     unsigned char out[16]) {
    uint32_t state[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    unsigned char block[64];
    size_t filled = 0;
    const unsigned char *parts[2] = {prefix, text};
    size_t sizes[2] = {prefix_size, text_size};
    for (int part = 0; part < 2; part++) {
        const unsigned char *data = parts[part];
        size_t left = sizes[part];
        while (left > 0) {
            size_t take = 64 - filled < left ? 64 - filled : left;
            memcpy(block + filled, data, take);
            filled += take;
            data += take;
            left -= take;
            if (filled == 64) {
                sha1_block(state, block);
                filled = 0;
            }
        }
    }
    uint64_t bits = ((uint64_t)prefix_size + (uint64_t)text_size) * 8;
    block[filled++] = 0x80;
    if (filled > 56) {
        memset(block + filled, 0, 64 - filled);
        sha1_block(state, block);
        filled = 0;
    }
    memset(block + filled, 0, 56 - filled);
    for (int i = 0; i < 8; i++) {
        block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    }
    sha1_block(state, block);
    for (int i = 0; i < 4; i++) {
        out[4 * i] = (unsigned char)(state[i] >> 24);
        out[4 * i + 1] = (unsigned char)(state[i] >> 16);
        out[4 * i + 2] = (unsigned char)(state[i] >> 8);
        out[4 * i + 3] = (unsigned char)state[i];
    }
}

static PyObject *event_ids(PyObject *module, PyObject *args) {
    static const char HEX[] = "0123456789abcdef";
    Py_buffer prefix;
    PyObject *given;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*O:event_ids", &prefix, &given)) {
        return NULL;
    }
    PyObject *names = PySequence_Fast(given, "names must be a sequence");
    if (names == NULL) {
        PyBuffer_Release(&prefix);
        return NULL;
    }
    Py_ssize_t size = PySequence_Fast_GET_SIZE(names);
    PyObject *result = PyList_New(size);
    if (result == NULL) {
        goto fail;
    }
    unsigned char digest[16];
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *name = PySequence_Fast_GET_ITEM(names, i);
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "names must be str");
            goto fail;
        }
        Py_ssize_t length;
        const char *text = PyUnicode_AsUTF8AndSize(name, &length); /* str.encode()'s UTF-8 */
        if (text == NULL) {
            goto fail;
        }
        sha1_two(prefix.buf, (size_t)prefix.len, (const unsigned char *)text, (size_t)length, digest);
        digest[6] = (unsigned char)((digest[6] & 0x0f) | 0x50); /* version 5 */
        digest[8] = (unsigned char)((digest[8] & 0x3f) | 0x80); /* the RFC 4122 variant */
        char formatted[36];
        int at = 0;
        for (int byte = 0; byte < 16; byte++) {
            if (byte == 4 || byte == 6 || byte == 8 || byte == 10) {
                formatted[at++] = '-';
            }
            formatted[at++] = HEX[digest[byte] >> 4];
            formatted[at++] = HEX[digest[byte] & 0x0f];
        }
        PyObject *id = PyUnicode_FromStringAndSize(formatted, 36);
        if (id == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(result, i, id);
    }
    PyBuffer_Release(&prefix);
    Py_DECREF(names);
    return result;
fail:
    PyBuffer_Release(&prefix);
    Py_DECREF(names);
    Py_XDECREF(result);
    return NULL;
}

/* ---- the binary COPY ------------------------------------------------------------------------------------ */

/* What each of the 19 columns is written as (the staging table's field after `position`). */
enum kind { TIME, KEY, ID_REQUIRED, ID, COST, SMALL, COUNT };
static const enum kind KINDS[COLUMNS] = {
    TIME, KEY, ID_REQUIRED, ID, ID, ID, ID, ID, ID, COST, SMALL, COUNT, COUNT, COUNT, COUNT, COUNT, COUNT, COUNT, SMALL,
};
static const unsigned char SIGNATURE[19] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0,
                                            0, 0, 0, 0, 0, 0, 0, 0};
/* Bytes of a row: the field count, then per field its length (4) and its value. */
#define ROW_SIZE (2 + 4 * FIELDS + 4 + 8 + 16 + 4 + 4 * 6 + 8 + 2 + 4 * 7 + 2)

static inline unsigned char *put16(unsigned char *out, uint16_t value) {
    out[0] = (unsigned char)(value >> 8);
    out[1] = (unsigned char)value;
    return out + 2;
}

static inline unsigned char *put32(unsigned char *out, uint32_t value) {
    out[0] = (unsigned char)(value >> 24);
    out[1] = (unsigned char)(value >> 16);
    out[2] = (unsigned char)(value >> 8);
    out[3] = (unsigned char)value;
    return out + 4;
}

static inline unsigned char *put64(unsigned char *out, uint64_t value) {
    out = put32(out, (uint32_t)(value >> 32));
    return put32(out, (uint32_t)value);
}

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant, "chrono-Compatible Low-Level Date
 * Algorithms", days_from_civil). */
static int64_t days_from_civil(int64_t year, int64_t month, int64_t day) {
    year -= month <= 2;
    int64_t era = (year >= 0 ? year : year - 399) / 400;
    int64_t year_of_era = year - era * 400;
    int64_t day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

#define PG_EPOCH_DAYS 10957 /* 2000-01-01 in days since 1970-01-01 */

/* An int value, or the absent value for None where the column allows it; -1 with an exception set otherwise. */
static int integer(PyObject *value, int nullable, long long absent, long long low, long long high, long long *out) {
    if (value == Py_None) {
        if (!nullable) {
            PyErr_SetString(PyExc_TypeError, "a source id is required");
            return -1;
        }
        *out = absent;
        return 0;
    }
    if (!PyLong_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "staged values must be int or None");
        return -1;
    }
    int overflow = 0;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (number == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow || number < low || number > high) {
        PyErr_SetString(PyExc_OverflowError, "a staged value does not fit its field");
        return -1;
    }
    if (absent == -1 && number == -1) {
        PyErr_SetString(PyExc_ValueError, "a count, cost, status or code of -1 would be stored as absent");
        return -1;
    }
    *out = number;
    return 0;
}

static PyObject *copy_rows(PyObject *module, PyObject *args) {
    PyObject *columns;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!:copy_rows", &PyTuple_Type, &columns)) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(columns) != COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "copy_rows takes the 19 columns of a staged batch");
        return NULL;
    }
    Py_ssize_t size = -1;
    for (int c = 0; c < COLUMNS; c++) {
        PyObject *column = PyTuple_GET_ITEM(columns, c);
        if (!PyList_Check(column)) {
            PyErr_SetString(PyExc_TypeError, "staged columns must be lists");
            return NULL;
        }
        if (size == -1) {
            size = PyList_GET_SIZE(column);
        } else if (PyList_GET_SIZE(column) != size) {
            PyErr_SetString(PyExc_ValueError, "staged columns must all be of one length");
            return NULL;
        }
    }
    if (size > INT32_MAX || size > (PY_SSIZE_T_MAX - (Py_ssize_t)sizeof(SIGNATURE) - 2) / ROW_SIZE) {
        PyErr_SetString(PyExc_OverflowError, "too many rows for one COPY");
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)sizeof(SIGNATURE) + size * ROW_SIZE + 2);
    if (result == NULL) {
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    memcpy(out, SIGNATURE, sizeof(SIGNATURE));
    out += sizeof(SIGNATURE);
    for (Py_ssize_t row = 0; row < size; row++) {
        out = put16(out, FIELDS);
        out = put32(out, 4);
        out = put32(out, (uint32_t)row);
        for (int c = 0; c < COLUMNS; c++) {
            /* The list may not change under us: nothing here runs Python code (no __index__, no __eq__). */
            PyObject *value = PyList_GET_ITEM(PyTuple_GET_ITEM(columns, c), row);
            long long number;
            switch (KINDS[c]) {
            case TIME: {
                if (!PyDateTime_Check(value) || PyDateTime_DATE_GET_TZINFO(value) != PyDateTime_TimeZone_UTC) {
                    PyErr_SetString(PyExc_TypeError, "event times must be datetimes in datetime.UTC");
                    goto fail;
                }
                int64_t days = days_from_civil(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value),
                                               PyDateTime_GET_DAY(value)) - PG_EPOCH_DAYS;
                int64_t seconds = days * 86400 + PyDateTime_DATE_GET_HOUR(value) * 3600 +
                                  PyDateTime_DATE_GET_MINUTE(value) * 60 + PyDateTime_DATE_GET_SECOND(value);
                out = put32(out, 8);
                out = put64(out, (uint64_t)(seconds * 1000000 + PyDateTime_DATE_GET_MICROSECOND(value)));
                break;
            }
            case KEY:
                if (!PyBytes_Check(value) || PyBytes_GET_SIZE(value) < 16) {
                    PyErr_SetString(PyExc_TypeError, "keys must be bytes of at least 16");
                    goto fail;
                }
                out = put32(out, 16);
                memcpy(out, PyBytes_AS_STRING(value), 16);
                out += 16;
                break;
            case ID_REQUIRED:
            case ID:
                if (integer(value, KINDS[c] == ID, 0, INT32_MIN, INT32_MAX, &number) < 0) {
                    goto fail;
                }
                out = put32(out, 4);
                out = put32(out, (uint32_t)(int32_t)number);
                break;
            case COST:
                if (integer(value, 1, -1, INT64_MIN, INT64_MAX, &number) < 0) {
                    goto fail;
                }
                out = put32(out, 8);
                out = put64(out, (uint64_t)(int64_t)number);
                break;
            case SMALL:
                if (integer(value, 1, -1, INT16_MIN, INT16_MAX, &number) < 0) {
                    goto fail;
                }
                out = put32(out, 2);
                out = put16(out, (uint16_t)(int16_t)number);
                break;
            case COUNT:
                if (integer(value, 1, -1, INT32_MIN, INT32_MAX, &number) < 0) {
                    goto fail;
                }
                out = put32(out, 4);
                out = put32(out, (uint32_t)(int32_t)number);
                break;
            }
        }
    }
    put16(out, 0xffff);
    return result;
fail:
    Py_DECREF(result);
    return NULL;
}

static PyMethodDef methods[] = {
    {"copy_rows", copy_rows, METH_VARARGS, "The binary COPY of a staged batch's 19 columns (see the source)."},
    {"keys", keys, METH_VARARGS, "The first 16 bytes of SHA-256(prefix + id) for each id."},
    {"event_ids", event_ids, METH_VARARGS, "The uuid5 text of SHA-1(prefix + name) for each name."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "portal.usage._native", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
