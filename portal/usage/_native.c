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
 * charges(indexes, prices, inputs, cached, writes, outputs, reasonings, max_cost) -> (costs, patterns) | None
 *   ingest._charges_python's answer: each event charged with the tariff prices[indexes[i]] (input, cached, write,
 *   output and reasoning micro-prices, and whether reasoning is priced apart), absent counts as 0, in exact 128-bit
 *   arithmetic; None when any event's counts are inconsistent or its cost exceeds max_cost (the row-wise rating then
 *   says which and why). The pattern of an event has a bit per charged part that is non-zero.
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
/* The columns deltas() takes, in this order (store.StagedBatch's, without keys, sources, price sets, versions). */
enum {
    DELTA_TIME, DELTA_TEAM, DELTA_CREDENTIAL, DELTA_MODEL, DELTA_DEPLOYMENT, DELTA_COST, DELTA_STATUS,
    DELTA_DURATION, DELTA_TTFT, DELTA_INPUT, DELTA_CACHED, DELTA_WRITE, DELTA_OUTPUT, DELTA_REASONING,
    DELTA_QUARANTINE, DELTA_COLUMNS
};

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

static void sha256_block(uint32_t *state, const unsigned char block[64]) {
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

/* SHA-256's (and below SHA-1's) compression with the x86 SHA extensions (Intel, "Intel SHA Extensions", 2013: sha256rnds2 does two
 * rounds on the state held as ABEF and CDGH, sha256msg1 and sha256msg2 extend the message schedule four words at a
 * time), where the processor has them: about four times the portable sha256_block's speed. Chosen at import
 * (sha_extensions(False) turns them off: for the tests of the portable code, and under valgrind, which may not know
 * these instructions); both are held to hashlib's digests. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_SHA_EXTENSIONS 1

__attribute__((target("sha,sse4.1"))) static void sha256_block_extensions(uint32_t *state,
                                                                         const unsigned char block[64]) {
    const __m128i byte_order = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i words = _mm_loadu_si128((const __m128i *)&state[0]);   /* DCBA */
    __m128i state1 = _mm_loadu_si128((const __m128i *)&state[4]);  /* HGFE */
    words = _mm_shuffle_epi32(words, 0xB1);                         /* CDAB */
    state1 = _mm_shuffle_epi32(state1, 0x1B);                       /* EFGH */
    __m128i state0 = _mm_alignr_epi8(words, state1, 8);             /* ABEF */
    state1 = _mm_blend_epi16(state1, words, 0xF0);                  /* CDGH */
    const __m128i saved0 = state0, saved1 = state1;
    __m128i schedule[4];
    for (int group = 0; group < 16; group++) {
        __m128i message;
        if (group < 4) {
            message = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 16 * group)), byte_order);
        } else { /* W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four words at a time */
            message = _mm_sha256msg1_epu32(schedule[group & 3], schedule[(group + 1) & 3]);
            message = _mm_add_epi32(message, _mm_alignr_epi8(schedule[(group + 3) & 3], schedule[(group + 2) & 3], 4));
            message = _mm_sha256msg2_epu32(message, schedule[(group + 3) & 3]);
        }
        schedule[group & 3] = message;
        __m128i rounds = _mm_add_epi32(message, _mm_loadu_si128((const __m128i *)&K256[4 * group]));
        state1 = _mm_sha256rnds2_epu32(state1, state0, rounds);
        state0 = _mm_sha256rnds2_epu32(state0, state1, _mm_shuffle_epi32(rounds, 0x0E));
    }
    state0 = _mm_add_epi32(state0, saved0);
    state1 = _mm_add_epi32(state1, saved1);
    words = _mm_shuffle_epi32(state0, 0x1B);                        /* FEBA */
    state1 = _mm_shuffle_epi32(state1, 0xB1);                       /* DCHG */
    state0 = _mm_blend_epi16(words, state1, 0xF0);                  /* DCBA */
    state1 = _mm_alignr_epi8(state1, words, 8);                     /* HGFE */
    _mm_storeu_si128((__m128i *)&state[0], state0);
    _mm_storeu_si128((__m128i *)&state[4], state1);
}
#else
#define HAVE_SHA_EXTENSIONS 0
#endif

static int sha_extensions_used = 0; /* set at import where the processor has them */

static void sha256_block_chosen(uint32_t *state, const unsigned char block[64]) {
#if HAVE_SHA_EXTENSIONS
    if (sha_extensions_used) {
        sha256_block_extensions(state, block);
        return;
    }
#endif
    sha256_block(state, block);
}

static int sha_extensions_available(void) {
#if HAVE_SHA_EXTENSIONS
    __builtin_cpu_init();
    return __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1");
#else
    return 0;
#endif
}

static PyObject *sha_extensions(PyObject *module, PyObject *enable) {
    (void)module;
    int wanted = PyObject_IsTrue(enable);
    if (wanted < 0) {
        return NULL;
    }
    sha_extensions_used = wanted && sha_extensions_available();
    return PyBool_FromLong(sha_extensions_used);
}

/* The Merkle-Damgard padding both hashes share (FIPS 180-4, 5.1.1): the message, a 1 bit, zeros, and its length in
 * bits as 64 bits big-endian, in blocks of 64 bytes. The message is prefix + text; the first 16 bytes of the final
 * state (big-endian words) go into out, which is all that a key or a UUID keeps. */
typedef void (*block_function)(uint32_t *state, const unsigned char block[64]);

static void digest_two(block_function compress, uint32_t *state, const unsigned char *prefix, size_t prefix_size,
                       const unsigned char *text, size_t text_size, unsigned char out[16]) {
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
                compress(state, block);
                filled = 0;
            }
        }
    }
    uint64_t bits = ((uint64_t)prefix_size + (uint64_t)text_size) * 8;
    block[filled++] = 0x80;
    if (filled > 56) {
        memset(block + filled, 0, 64 - filled);
        compress(state, block);
        filled = 0;
    }
    memset(block + filled, 0, 56 - filled);
    for (int i = 0; i < 8; i++) {
        block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    }
    compress(state, block);
    for (int i = 0; i < 4; i++) {
        out[4 * i] = (unsigned char)(state[i] >> 24);
        out[4 * i + 1] = (unsigned char)(state[i] >> 16);
        out[4 * i + 2] = (unsigned char)(state[i] >> 8);
        out[4 * i + 3] = (unsigned char)state[i];
    }
}

static void sha256_two(const unsigned char *prefix, size_t prefix_size, const unsigned char *text,
                       size_t text_size, unsigned char out[16]) {
    uint32_t state[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    digest_two(sha256_block_chosen, state, prefix, prefix_size, text, text_size, out);
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

static void sha1_block(uint32_t *state, const unsigned char block[64]) {
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

#if HAVE_SHA_EXTENSIONS
/* SHA-1's compression with the SHA extensions (sha1rnds4: four rounds on ABCD with E folded into the message by
 * sha1nexte; sha1msg1 and sha1msg2 extend the schedule four words at a time). The round function's kind is an
 * immediate operand, one of four, a fifth of the rounds each. */
__attribute__((target("sha,sse4.1"))) static void sha1_block_extensions(uint32_t *state,
                                                                       const unsigned char block[64]) {
    const __m128i byte_order = _mm_set_epi64x(0x0001020304050607ULL, 0x08090a0b0c0d0e0fULL);
    __m128i abcd = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)state), 0x1B);
    const __m128i e_saved = _mm_set_epi32((int)state[4], 0, 0, 0), abcd_saved = abcd;
    __m128i schedule[4], e = e_saved, previous = abcd;
    for (int group = 0; group < 20; group++) {
        __m128i message;
        if (group < 4) {
            message = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 16 * group)), byte_order);
        } else { /* W[t] = rol1(W[t-3] ^ W[t-8] ^ W[t-14] ^ W[t-16]), four words at a time */
            message = _mm_sha1msg1_epu32(schedule[group & 3], schedule[(group + 1) & 3]);
            message = _mm_xor_si128(message, schedule[(group + 2) & 3]);
            message = _mm_sha1msg2_epu32(message, schedule[(group + 3) & 3]);
        }
        schedule[group & 3] = message;
        e = group == 0 ? _mm_add_epi32(e, message) : _mm_sha1nexte_epu32(previous, message);
        previous = abcd;
        switch (group / 5) {
        case 0:
            abcd = _mm_sha1rnds4_epu32(abcd, e, 0);
            break;
        case 1:
            abcd = _mm_sha1rnds4_epu32(abcd, e, 1);
            break;
        case 2:
            abcd = _mm_sha1rnds4_epu32(abcd, e, 2);
            break;
        default:
            abcd = _mm_sha1rnds4_epu32(abcd, e, 3);
        }
    }
    e = _mm_sha1nexte_epu32(previous, e_saved);
    abcd = _mm_shuffle_epi32(_mm_add_epi32(abcd, abcd_saved), 0x1B);
    _mm_storeu_si128((__m128i *)state, abcd);
    state[4] = (uint32_t)_mm_extract_epi32(e, 3);
}
#endif

static void sha1_block_chosen(uint32_t *state, const unsigned char block[64]) {
#if HAVE_SHA_EXTENSIONS
    if (sha_extensions_used) {
        sha1_block_extensions(state, block);
        return;
    }
#endif
    sha1_block(state, block);
}

/* The SHA-1 of prefix + text, its first 16 bytes into out (a UUID is 16 bytes of it). */
static void sha1_two(const unsigned char *prefix, size_t prefix_size, const unsigned char *text, size_t text_size,
                     unsigned char out[16]) {
    uint32_t state[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    digest_two(sha1_block_chosen, state, prefix, prefix_size, text, text_size, out);
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

/* Microseconds since 2000-01-01 UTC of a datetime in datetime.UTC (PostgreSQL's timestamptz); -1 with TypeError
 * set for anything else (the result itself may be negative: check PyErr_Occurred()). */
static int64_t utc_micros(PyObject *value) {
    if (!PyDateTime_Check(value) || PyDateTime_DATE_GET_TZINFO(value) != PyDateTime_TimeZone_UTC) {
        PyErr_SetString(PyExc_TypeError, "event times must be datetimes in datetime.UTC");
        return -1;
    }
    int64_t days = days_from_civil(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value),
                                   PyDateTime_GET_DAY(value)) - PG_EPOCH_DAYS;
    int64_t seconds = days * 86400 + PyDateTime_DATE_GET_HOUR(value) * 3600 +
                      PyDateTime_DATE_GET_MINUTE(value) * 60 + PyDateTime_DATE_GET_SECOND(value);
    return seconds * 1000000 + PyDateTime_DATE_GET_MICROSECOND(value);
}

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
                int64_t micros = utc_micros(value);
                if (micros == -1 && PyErr_Occurred()) {
                    goto fail;
                }
                out = put32(out, 8);
                out = put64(out, (uint64_t)micros);
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

/* ---- the rollup deltas of a stored batch ------------------------------------------------------------------ */

#define MAX_BOUNDS 15
#define HOUR_MICROS INT64_C(3600000000)

typedef struct {
    int64_t hour, team, model, credential, deployment; /* deployment: -1 when None */
    int64_t requests, failed, unmetered, input, cached, write, output, reasoning, last;
    unsigned __int128 cost;
    int64_t latency[MAX_BOUNDS + 1], ttft[MAX_BOUNDS + 1];
} Group;

/* An int of a column, or `absent` for None; -1 with an exception set when it is neither (check PyErr_Occurred). */
static int64_t value_or(PyObject *value, int64_t absent) {
    if (value == Py_None) {
        return absent;
    }
    if (!PyLong_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "delta columns hold int or None");
        return -1;
    }
    return PyLong_AsLongLong(value); /* OverflowError past 64 bits */
}

static PyObject *cost_object(unsigned __int128 cost) {
    PyObject *high = PyLong_FromUnsignedLongLong((unsigned long long)(cost >> 64));
    PyObject *low = PyLong_FromUnsignedLongLong((unsigned long long)cost);
    PyObject *shift = PyLong_FromLong(64);
    PyObject *shifted = high && shift ? PyNumber_Lshift(high, shift) : NULL;
    PyObject *result = shifted && low ? PyNumber_Or(shifted, low) : NULL;
    Py_XDECREF(high);
    Py_XDECREF(low);
    Py_XDECREF(shift);
    Py_XDECREF(shifted);
    return result;
}

static PyObject *histogram(const int64_t *counts, int size) {
    PyObject *list = PyList_New(size);
    if (list == NULL) {
        return NULL;
    }
    for (int i = 0; i < size; i++) {
        PyObject *count = PyLong_FromLongLong(counts[i]);
        if (count == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, count);
    }
    return list;
}

/* A group's key mixed into one word (multiplicative hashing: each part times an odd constant, folded). */
static inline uint64_t group_hash(int64_t hour, int64_t team, int64_t model, int64_t credential, int64_t deployment) {
    uint64_t hash = (uint64_t)hour * 0x9e3779b97f4a7c15ULL;
    hash ^= (uint64_t)team * 0xc2b2ae3d27d4eb4fULL;
    hash ^= (uint64_t)model * 0x165667b19e3779f9ULL;
    hash ^= (uint64_t)credential * 0x27d4eb2f165667c5ULL;
    hash ^= (uint64_t)deployment * 0x85ebca77c2b2ae63ULL;
    return hash ^ (hash >> 29);
}

/* The bucket of a request-health value: how many bounds are <= it (the SQL's [low, high) ranges, the last open). */
static int bucket(int64_t value, const int64_t *bounds, int count) {
    int at = 0;
    while (at < count && bounds[at] <= value) {
        at++;
    }
    return at;
}

static PyObject *deltas(PyObject *module, PyObject *args) {
    PyObject *columns, *skip, *given_bounds;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!OO!:deltas", &PyTuple_Type, &columns, &skip, &PyTuple_Type, &given_bounds)) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(columns) != DELTA_COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "deltas takes the 15 columns of a stored batch");
        return NULL;
    }
    if (skip != Py_None && !PyAnySet_Check(skip)) {
        PyErr_SetString(PyExc_TypeError, "skip must be a set of positions or None");
        return NULL;
    }
    int bound_count = (int)PyTuple_GET_SIZE(given_bounds);
    if (bound_count > MAX_BOUNDS) {
        PyErr_SetString(PyExc_ValueError, "too many request-health bounds");
        return NULL;
    }
    int64_t bounds[MAX_BOUNDS];
    for (int i = 0; i < bound_count; i++) {
        bounds[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(given_bounds, i));
        if (bounds[i] == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    PyObject *lists[DELTA_COLUMNS];
    Py_ssize_t size = -1;
    for (int c = 0; c < DELTA_COLUMNS; c++) {
        lists[c] = PyTuple_GET_ITEM(columns, c);
        if (!PyList_Check(lists[c]) || (size != -1 && PyList_GET_SIZE(lists[c]) != size)) {
            PyErr_SetString(PyExc_TypeError, "delta columns must be lists of one length");
            return NULL;
        }
        size = PyList_GET_SIZE(lists[c]);
    }
    /* The groups in order of appearance, found through an open-addressing index of twice their number or more (a
     * batch has a few hundred groups: both stay small, whatever the batch's size). */
    size_t capacity = 512, allocated = 128, count = 0;
    int32_t *slots = PyMem_Malloc(capacity * sizeof(int32_t));
    Group *groups = PyMem_Malloc(allocated * sizeof(Group));
    PyObject *result = NULL;
    if (slots == NULL || groups == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memset(slots, 0xff, capacity * sizeof(int32_t));
    for (Py_ssize_t row = 0; row < size; row++) {
        if (PyList_GET_ITEM(lists[DELTA_QUARANTINE], row) != Py_None) {
            continue;
        }
        if (skip != Py_None) {
            PyObject *position = PyLong_FromSsize_t(row);
            int found = position ? PySet_Contains(skip, position) : -1;
            Py_XDECREF(position);
            if (found < 0) {
                goto done;
            }
            if (found) {
                continue;
            }
        }
        int64_t values[DELTA_COLUMNS];
        int64_t micros = utc_micros(PyList_GET_ITEM(lists[DELTA_TIME], row));
        if (micros == -1 && PyErr_Occurred()) {
            goto done;
        }
        for (int c = DELTA_TIME + 1; c < DELTA_QUARANTINE; c++) {
            values[c] = value_or(PyList_GET_ITEM(lists[c], row), -1);
            if (values[c] == -1 && PyErr_Occurred()) {
                goto done;
            }
        }
        /* floor to the hour, also before 2000 (negative micros) */
        int64_t hour = micros - ((micros % HOUR_MICROS) + HOUR_MICROS) % HOUR_MICROS;
        size_t at = (size_t)group_hash(hour, values[DELTA_TEAM], values[DELTA_MODEL], values[DELTA_CREDENTIAL],
                                       values[DELTA_DEPLOYMENT]) & (capacity - 1);
        Group *group = NULL;
        while (slots[at] != -1) {
            Group *candidate = &groups[slots[at]];
            if (candidate->hour == hour && candidate->team == values[DELTA_TEAM] &&
                candidate->model == values[DELTA_MODEL] && candidate->credential == values[DELTA_CREDENTIAL] &&
                candidate->deployment == values[DELTA_DEPLOYMENT]) {
                group = candidate;
                break;
            }
            at = (at + 1) & (capacity - 1);
        }
        if (group == NULL) {
            if (count == allocated) {
                Group *grown = PyMem_Realloc(groups, allocated * 2 * sizeof(Group));
                if (grown == NULL) {
                    PyErr_NoMemory();
                    goto done;
                }
                groups = grown;
                allocated *= 2;
            }
            group = &groups[count];
            memset(group, 0, sizeof(Group));
            group->hour = hour;
            group->team = values[DELTA_TEAM];
            group->model = values[DELTA_MODEL];
            group->credential = values[DELTA_CREDENTIAL];
            group->deployment = values[DELTA_DEPLOYMENT];
            group->last = micros;
            slots[at] = (int32_t)count;
            count++;
            if (count * 2 > capacity) { /* grow the index and place every group again */
                size_t larger = capacity * 2;
                int32_t *grown = PyMem_Malloc(larger * sizeof(int32_t));
                if (grown == NULL) {
                    PyErr_NoMemory();
                    goto done;
                }
                memset(grown, 0xff, larger * sizeof(int32_t));
                for (size_t g = 0; g < count; g++) {
                    Group *placed = &groups[g];
                    size_t slot = (size_t)group_hash(placed->hour, placed->team, placed->model, placed->credential,
                                                     placed->deployment) & (larger - 1);
                    while (grown[slot] != -1) {
                        slot = (slot + 1) & (larger - 1);
                    }
                    grown[slot] = (int32_t)g;
                }
                PyMem_Free(slots);
                slots = grown;
                capacity = larger;
                group = &groups[count - 1];
            }
        }
        group->requests += 1;
        group->failed += values[DELTA_STATUS] >= 400;
        group->unmetered += values[DELTA_INPUT] == -1 && values[DELTA_OUTPUT] == -1;
        group->input += values[DELTA_INPUT] > 0 ? values[DELTA_INPUT] : 0;
        group->cached += values[DELTA_CACHED] > 0 ? values[DELTA_CACHED] : 0;
        group->write += values[DELTA_WRITE] > 0 ? values[DELTA_WRITE] : 0;
        group->output += values[DELTA_OUTPUT] > 0 ? values[DELTA_OUTPUT] : 0;
        group->reasoning += values[DELTA_REASONING] > 0 ? values[DELTA_REASONING] : 0;
        group->cost += values[DELTA_COST] > 0 ? (unsigned __int128)values[DELTA_COST] : 0;
        if (micros > group->last) {
            group->last = micros;
        }
        if (values[DELTA_DURATION] >= 0) {
            group->latency[bucket(values[DELTA_DURATION], bounds, bound_count)] += 1;
        }
        if (values[DELTA_TTFT] >= 0) {
            group->ttft[bucket(values[DELTA_TTFT], bounds, bound_count)] += 1;
        }
    }
    result = PyList_New(0);
    if (result == NULL) {
        goto done;
    }
    for (size_t at = 0; at < count; at++) {
        Group *group = &groups[at];
        PyObject *cost = cost_object(group->cost);
        PyObject *latency = histogram(group->latency, bound_count + 1);
        PyObject *ttft = histogram(group->ttft, bound_count + 1);
        PyObject *deployment = group->deployment == -1 ? Py_NewRef(Py_None) : PyLong_FromLongLong(group->deployment);
        PyObject *entry = NULL;
        if (cost && latency && ttft && deployment) {
            entry = Py_BuildValue("(LLLLOLLLLLLLLOLOO)", group->hour, group->team, group->model, group->credential,
                                  deployment, group->requests, group->failed, group->unmetered, group->input,
                                  group->cached, group->write, group->output, group->reasoning, cost, group->last,
                                  latency, ttft);
        }
        Py_XDECREF(cost);
        Py_XDECREF(latency);
        Py_XDECREF(ttft);
        Py_XDECREF(deployment);
        if (entry == NULL || PyList_Append(result, entry) < 0) {
            Py_XDECREF(entry);
            Py_CLEAR(result);
            goto done;
        }
        Py_DECREF(entry);
    }
done:
    PyMem_Free(slots);
    PyMem_Free(groups);
    return result;
}

/* ---- charging a rated batch ------------------------------------------------------------------------------- */

#define MAX_TARIFFS 256 /* distinct tariffs in a batch (models x price periods); more: the Python twin */

static PyObject *charges(PyObject *module, PyObject *args) {
    PyObject *indexes, *prices, *counts[5];
    long long max_cost;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!O!L:charges", &PyList_Type, &indexes, &PyList_Type, &prices,
                          &PyList_Type, &counts[0], &PyList_Type, &counts[1], &PyList_Type, &counts[2],
                          &PyList_Type, &counts[3], &PyList_Type, &counts[4], &max_cost)) {
        return NULL;
    }
    Py_ssize_t size = PyList_GET_SIZE(indexes), tariffs = PyList_GET_SIZE(prices);
    for (int c = 0; c < 5; c++) {
        if (PyList_GET_SIZE(counts[c]) != size) {
            PyErr_SetString(PyExc_ValueError, "charges takes columns of one length");
            return NULL;
        }
    }
    if (tariffs > MAX_TARIFFS) {
        PyErr_SetString(PyExc_OverflowError, "too many tariffs in one batch");
        return NULL;
    }
    int64_t micro[MAX_TARIFFS][5];
    int priced[MAX_TARIFFS];
    for (Py_ssize_t t = 0; t < tariffs; t++) {
        PyObject *entry = PyList_GET_ITEM(prices, t);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 6) {
            PyErr_SetString(PyExc_TypeError, "a tariff is (input, cached, write, output, reasoning, priced)");
            return NULL;
        }
        for (int part = 0; part < 5; part++) {
            PyObject *price = PyTuple_GET_ITEM(entry, part);
            if (!PyLong_Check(price)) {
                PyErr_SetString(PyExc_TypeError, "micro-prices are int");
                return NULL;
            }
            micro[t][part] = PyLong_AsLongLong(price);
            if (micro[t][part] == -1 && PyErr_Occurred()) {
                return NULL;
            }
        }
        priced[t] = PyObject_IsTrue(PyTuple_GET_ITEM(entry, 5));
        if (priced[t] < 0) {
            return NULL;
        }
    }
    PyObject *costs = PyList_New(size), *patterns = PyList_New(size);
    if (costs == NULL || patterns == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        Py_ssize_t at = PyLong_AsSsize_t(PyList_GET_ITEM(indexes, i));
        if (at == -1 && PyErr_Occurred()) {
            goto fail;
        }
        if (at < 0 || at >= tariffs) {
            PyErr_SetString(PyExc_IndexError, "a tariff index out of range");
            goto fail;
        }
        int64_t part[5]; /* input, cached, write, output, reasoning; absent counts are 0 (rating's rule) */
        for (int c = 0; c < 5; c++) {
            part[c] = value_or(PyList_GET_ITEM(counts[c], i), 0);
            if (PyErr_Occurred()) {
                goto fail;
            }
            if (part[c] < INT32_MIN || part[c] > INT32_MAX) { /* the readers keep counts below 2^31 */
                PyErr_SetString(PyExc_OverflowError, "a count past 32 bits");
                goto fail;
            }
        }
        if (part[1] + part[2] > part[0]) {
            goto unrated; /* inconsistent_tokens */
        }
        if (priced[at]) { /* reasoning is charged apart only where priced, as a part of output */
            if (part[4] > part[3]) {
                goto unrated; /* inconsistent_tokens */
            }
            part[3] -= part[4];
        } else {
            part[4] = 0;
        }
        int64_t uncached = part[0] - part[1] - part[2];
        __int128 cost = (__int128)uncached * micro[at][0] + (__int128)part[1] * micro[at][1] +
                        (__int128)part[2] * micro[at][2] + (__int128)part[3] * micro[at][3] +
                        (__int128)part[4] * micro[at][4];
        if (cost > max_cost) {
            goto unrated; /* cost_out_of_range */
        }
        if (cost < INT64_MIN) {
            PyErr_SetString(PyExc_OverflowError, "a cost below 64 bits");
            goto fail;
        }
        long pattern = (uncached > 0) | (part[1] > 0) << 1 | (part[2] > 0) << 2 | (part[3] > 0) << 3 |
                       (part[4] > 0) << 4;
        PyObject *cost_value = PyLong_FromLongLong((long long)cost), *pattern_value = PyLong_FromLong(pattern);
        if (cost_value == NULL || pattern_value == NULL) {
            Py_XDECREF(cost_value);
            Py_XDECREF(pattern_value);
            goto fail;
        }
        PyList_SET_ITEM(costs, i, cost_value);
        PyList_SET_ITEM(patterns, i, pattern_value);
    }
    return Py_BuildValue("(NN)", costs, patterns);
unrated:
    Py_DECREF(costs);
    Py_DECREF(patterns);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(costs);
    Py_XDECREF(patterns);
    return NULL;
}

static PyMethodDef methods[] = {
    {"copy_rows", copy_rows, METH_VARARGS, "The binary COPY of a staged batch's 19 columns (see the source)."},
    {"keys", keys, METH_VARARGS, "The first 16 bytes of SHA-256(prefix + id) for each id."},
    {"event_ids", event_ids, METH_VARARGS, "The uuid5 text of SHA-1(prefix + name) for each name."},
    {"deltas", deltas, METH_VARARGS, "The rollup deltas of a stored batch's columns (see the source)."},
    {"charges", charges, METH_VARARGS, "The costs and price patterns of a batch's counts (see the source)."},
    {"sha_extensions", sha_extensions, METH_O, "Use the x86 SHA extensions where present; whether they are used."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "portal.usage._native", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) {
        return NULL;
    }
    sha_extensions_used = sha_extensions_available();
    return PyModule_Create(&module);
}
