/* Texts built once per distinct content in one scan of a body: the C scans of usage batches (_otlp_scan.c,
 * _cloudevents_scan.c) both include this. A gateway's batch repeats its sources, routes, models and credentials on
 * every event; each is turned into a Python str the first time and the same object is handed out after, which
 * saves building and freeing thousands of equal strings. Texts must be ASCII (the scans check it first): their
 * characters are their bytes. The entries point into the body, which outlives the scan. */
#ifndef PORTAL_USAGE_INTERNING_H
#define PORTAL_USAGE_INTERNING_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

#define TEXTS_COLUMNS 64

typedef struct {
    uint64_t hash;
    const uint8_t *p; /* into the body, alive for the whole call */
    Py_ssize_t length;
    PyObject *text;
} Interned;

typedef struct {
    /* Texts already built, by content (open addressing, power-of-two capacity, at most half full). */
    Interned *table;
    size_t capacity, used;
    /* Per column: texts looked up and found, so that a column of distinct texts (ids, request ids, times) stops
     * being looked up once it is clearly not repeating. */
    Py_ssize_t lookups[TEXTS_COLUMNS], hits[TEXTS_COLUMNS];
    /* Per column: the entry of the last text built or found, compared first (a batch of one gateway repeats its
     * source, type and route on every event). */
    const Interned *last[TEXTS_COLUMNS];
} Texts;

/* memcmp(a, b, length) == 0, inline: the keys and texts compared are short, and a call to the C library's memcmp
 * for each was a fifth of the CloudEvents scan's time. */
static inline int
same_bytes(const void *a, const void *b, size_t length)
{
    const uint8_t *x = a, *y = b;
    for (; length >= 8; x += 8, y += 8, length -= 8) {
        uint64_t u, v;
        memcpy(&u, x, 8);
        memcpy(&v, y, 8);
        if (u != v) {
            return 0;
        }
    }
    for (; length > 0; x++, y++, length--) {
        if (*x != *y) {
            return 0;
        }
    }
    return 1;
}

static PyObject *
new_text(const uint8_t *p, Py_ssize_t length)
{
    /* ASCII checked by the caller: the characters are the bytes, and maxchar 127 gives the compact ASCII form. */
    PyObject *text = PyUnicode_New(length, 127);
    if (text != NULL && length > 0) {
        memcpy(PyUnicode_DATA(text), p, (size_t)length);
    }
    return text;
}

/* FNV-1a over 8-byte words (then the last bytes one by one), with the high bits folded down for the table's low
 * bits: only a table slot, so any spread will do. */
static uint64_t
hash_bytes(const uint8_t *p, Py_ssize_t length)
{
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (; length >= 8; p += 8, length -= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        hash = (hash ^ word) * 0x100000001b3ULL;
    }
    for (; length > 0; p++, length--) {
        hash = (hash ^ *p) * 0x100000001b3ULL;
    }
    return hash ^ (hash >> 29);
}

/* 0, or -1 with MemoryError set. */
static int
texts_grow(Texts *texts)
{
    size_t capacity = texts->capacity ? texts->capacity * 2 : 256;
    Interned *table = PyMem_Calloc(capacity, sizeof(Interned));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < texts->capacity; i++) {
        if (texts->table[i].text != NULL) {
            size_t slot = (size_t)texts->table[i].hash & (capacity - 1);
            while (table[slot].text != NULL) {
                slot = (slot + 1) & (capacity - 1);
            }
            table[slot] = texts->table[i];
        }
    }
    PyMem_Free(texts->table);
    texts->table = table;
    texts->capacity = capacity;
    memset(texts->last, 0, sizeof(texts->last)); /* they pointed into the old table */
    return 0;
}

/* A new reference to the text of column `column` (below TEXTS_COLUMNS), built once per distinct content in this
 * call while its column repeats; NULL with an exception set. */
static PyObject *
texts_get(Texts *texts, int column, const uint8_t *p, Py_ssize_t length)
{
    if (texts->lookups[column] >= 64 && texts->hits[column] * 4 < texts->lookups[column]) {
        return new_text(p, length); /* mostly distinct so far: not worth hashing */
    }
    texts->lookups[column]++;
    const Interned *last = texts->last[column];
    if (last != NULL && last->length == length && same_bytes(last->p, p, (size_t)length)) {
        texts->hits[column]++;
        return Py_NewRef(last->text);
    }
    if ((texts->used + 1) * 2 > texts->capacity && texts_grow(texts) != 0) {
        return NULL;
    }
    uint64_t hash = hash_bytes(p, length);
    size_t slot = (size_t)hash & (texts->capacity - 1);
    while (texts->table[slot].text != NULL) {
        Interned *entry = &texts->table[slot];
        if (entry->hash == hash && entry->length == length && same_bytes(entry->p, p, (size_t)length)) {
            texts->hits[column]++;
            texts->last[column] = entry;
            return Py_NewRef(entry->text);
        }
        slot = (slot + 1) & (texts->capacity - 1);
    }
    PyObject *text = new_text(p, length);
    if (text == NULL) {
        return NULL;
    }
    texts->table[slot] = (Interned){hash, p, length, text};
    texts->used++;
    texts->last[column] = &texts->table[slot];
    return Py_NewRef(text);
}

static void
texts_free(Texts *texts)
{
    for (size_t i = 0; i < texts->capacity; i++) {
        Py_XDECREF(texts->table[i].text);
    }
    PyMem_Free(texts->table);
    texts->table = NULL;
    texts->capacity = texts->used = 0;
}

#endif
