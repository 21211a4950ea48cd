/* The OTLP/HTTP protobuf export of the gateway's access log, scanned in C: one strict walk of the wire format that
 * hands portal/usage/otlp_wire.py each scope's attributes as columns, or None when it is not sure.
 *
 * Why: reading an export through the generated classes, or through upb into a lean schema, builds Python objects
 * for every attribute that Python then checks one by one; about 15 µs a record for Envoy's sixteen attributes. Here
 * the walk, the checks and the conversion of counts happen in C, and repeated texts (routes, models, credentials)
 * are built once per export.
 *
 * The input is untrusted. Every length is checked against what is left of its enclosing message, varints are at
 * most 10 bytes, nesting is bounded (MAX_DEPTH), and nothing is read past the end. The scan accepts only a subset
 * of what protobuf parsers accept, and reads it as they do; anything else is answered with None ("not sure"), and
 * Python then takes the upb reading, which reports problems exactly. What it declines, and why, is listed at
 * scan()'s docstring (SCAN_DOC). Field numbers and wire types: opentelemetry-proto collector/logs/v1/
 * logs_service.proto, logs/v1/logs.proto, common/v1/common.proto, resource/v1/resource.proto (checked against the
 * descriptors of the installed opentelemetry-proto package); the wire format: protobuf.dev/programming-guides/
 * encoding. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_interning.h"

/* Wire types (protobuf.dev encoding, "Message Structure"). Groups (3, 4) and 6, 7 are declined. */
enum { VARINT = 0, I64 = 1, LEN = 2, I32 = 5 };

/* Nesting of AnyValue inside kvlist or array values that is validated before declining. upb refuses nesting past
 * 100 messages (its default depth limit), so a bound this far below it never accepts what upb refuses. */
#define MAX_DEPTH 16
/* A record's attributes are tracked in a 64-bit mask: the caller's keys tuple may hold at most this many. */
#define MAX_KEYS TEXTS_COLUMNS

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Reader;

/* The outcome of a read: OK, or DECLINE (not in the sure subset; no Python error set), or ERROR (a Python error
 * is set, e.g. MemoryError). */
enum { OK = 0, DECLINE = 1, ERROR = 2 };

static int
read_varint(Reader *r, uint64_t *value)
{
    uint64_t result = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) {
            return DECLINE;
        }
        uint8_t byte = *r->p++;
        result |= (uint64_t)(byte & 0x7F) << shift; /* bits past 64 fall off, as in upb; only the length matters */
        if (!(byte & 0x80)) {
            *value = result;
            return OK;
        }
    }
    return DECLINE; /* more than 10 bytes: malformed */
}

/* A field's tag: number and wire type. Field number 0 and tags past 32 bits are malformed (upb refuses them). */
static int
read_tag(Reader *r, uint32_t *number, int *wire_type)
{
    uint64_t tag;
    if (read_varint(r, &tag) != OK || tag > UINT32_MAX || (tag >> 3) == 0) {
        return DECLINE;
    }
    *number = (uint32_t)(tag >> 3);
    *wire_type = (int)(tag & 7);
    return OK;
}

/* A length-delimited field's contents as a reader of their own; the length must fit in what is left. */
static int
read_length_delimited(Reader *r, Reader *inner)
{
    uint64_t length;
    if (read_varint(r, &length) != OK || length > (uint64_t)(r->end - r->p)) {
        return DECLINE;
    }
    inner->p = r->p;
    inner->end = r->p + (size_t)length;
    r->p = inner->end;
    return OK;
}

/* An unknown field, skipped by its wire type as protobuf parsers skip it. Groups are declined: upb would parse
 * their contents, and Envoy and the OpenTelemetry collector never send them. */
static int
skip_field(Reader *r, int wire_type)
{
    uint64_t ignored;
    Reader inner;
    switch (wire_type) {
    case VARINT:
        return read_varint(r, &ignored);
    case I64:
        if (r->end - r->p < 8) {
            return DECLINE;
        }
        r->p += 8;
        return OK;
    case LEN:
        return read_length_delimited(r, &inner);
    case I32:
        if (r->end - r->p < 4) {
            return DECLINE;
        }
        r->p += 4;
        return OK;
    default:
        return DECLINE;
    }
}

/* True when every byte is ASCII and none is NUL: then the text is valid UTF-8 (as upb requires of every string
 * field in proto3), its characters are its bytes, and no reading rejects it for a NUL. Eight bytes at a time: a
 * word has a byte >= 0x80 when (w & 0x80..80) is set, and a zero byte when (w - 0x01..01) & ~w & 0x80..80 is
 * (graphics.stanford.edu/~seander/bithacks.html#ZeroInWord). */
static int
is_plain_ascii(const uint8_t *p, size_t length)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        if ((word & highs) || ((word - ones) & ~word & highs)) {
            return 0;
        }
        p += 8;
        length -= 8;
    }
    while (length--) {
        uint8_t byte = *p++;
        if (byte == 0 || byte >= 0x80) {
            return 0;
        }
    }
    return 1;
}

static int
read_plain_string(Reader *r, Reader *text)
{
    if (read_length_delimited(r, text) != OK || !is_plain_ascii(text->p, (size_t)(text->end - text->p))) {
        return DECLINE;
    }
    return OK;
}

/* --- AnyValue, KeyValue, KeyValueList, ArrayValue (common/v1/common.proto) ------------------------------------ */

/* What an AnyValue holds: nothing set, a string (plain ASCII), or another kind (validated, not read). */
enum { VALUE_UNSET = 0, VALUE_STRING = 1, VALUE_OTHER = 2 };

static int validate_key_value(Reader r, int depth);

static int
validate_values(Reader r, int depth, int key_values);

/* An AnyValue's kind and, for a string, its text. The oneof `value` may be set once only: a second member would
 * replace the first (protobuf.dev encoding, "Oneofs"), which the scan leaves to upb. Nested kvlist and array
 * values are validated as upb validates them (wire format and UTF-8, here plain ASCII), to a bounded depth. */
static int
read_any_value(Reader r, int depth, int *kind, Reader *text)
{
    uint32_t number;
    int wire_type, status;
    uint64_t ignored;
    Reader inner;
    *kind = VALUE_UNSET;
    if (depth > MAX_DEPTH) {
        return DECLINE;
    }
    while (r.p < r.end) {
        if (read_tag(&r, &number, &wire_type) != OK) {
            return DECLINE;
        }
        if (number >= 1 && number <= 8 && *kind != VALUE_UNSET) {
            return DECLINE; /* a second member of the oneof */
        }
        switch (number) {
        case 1: /* string_value */
            if (wire_type != LEN || read_plain_string(&r, text) != OK) {
                return DECLINE;
            }
            *kind = VALUE_STRING;
            break;
        case 2: /* bool_value */
        case 3: /* int_value */
        case 8: /* string_value_strindex (int32) */
            if (wire_type != VARINT || read_varint(&r, &ignored) != OK) {
                return DECLINE;
            }
            *kind = VALUE_OTHER;
            break;
        case 4: /* double_value */
            if (wire_type != I64 || skip_field(&r, I64) != OK) {
                return DECLINE;
            }
            *kind = VALUE_OTHER;
            break;
        case 5: /* array_value: ArrayValue{repeated AnyValue values = 1} */
        case 6: /* kvlist_value: KeyValueList{repeated KeyValue values = 1} */
            if (wire_type != LEN || read_length_delimited(&r, &inner) != OK) {
                return DECLINE;
            }
            status = validate_values(inner, depth + 1, number == 6);
            if (status != OK) {
                return status;
            }
            *kind = VALUE_OTHER;
            break;
        case 7: /* bytes_value */
            if (wire_type != LEN || read_length_delimited(&r, &inner) != OK) {
                return DECLINE;
            }
            *kind = VALUE_OTHER;
            break;
        default:
            if (skip_field(&r, wire_type) != OK) {
                return DECLINE;
            }
        }
    }
    return OK;
}

/* The values of an ArrayValue (AnyValue each) or a KeyValueList (KeyValue each), both in field 1. */
static int
validate_values(Reader r, int depth, int key_values)
{
    uint32_t number;
    int wire_type, kind, status;
    Reader inner, text;
    if (depth > MAX_DEPTH) {
        return DECLINE;
    }
    while (r.p < r.end) {
        if (read_tag(&r, &number, &wire_type) != OK) {
            return DECLINE;
        }
        if (number != 1) {
            if (skip_field(&r, wire_type) != OK) {
                return DECLINE;
            }
            continue;
        }
        if (wire_type != LEN || read_length_delimited(&r, &inner) != OK) {
            return DECLINE;
        }
        status = key_values ? validate_key_value(inner, depth + 1) : read_any_value(inner, depth + 1, &kind, &text);
        if (status != OK) {
            return status;
        }
    }
    return OK;
}

/* A KeyValue's key (field 1) and value (field 2), each at most once (a second key would replace the first, a
 * second value would be merged into it). key_strindex (field 3, for profiles' string tables) is declined. */
static int
read_key_value(Reader r, int depth, Reader *key, int *kind, Reader *text)
{
    uint32_t number;
    int wire_type, seen_key = 0, seen_value = 0, status;
    Reader inner;
    key->p = key->end = r.p; /* no key: the empty key, as protobuf reads an absent string */
    *kind = VALUE_UNSET;     /* no value: an AnyValue with nothing set */
    while (r.p < r.end) {
        if (read_tag(&r, &number, &wire_type) != OK) {
            return DECLINE;
        }
        switch (number) {
        case 1:
            if (wire_type != LEN || seen_key++ || read_plain_string(&r, key) != OK) {
                return DECLINE;
            }
            break;
        case 2:
            if (wire_type != LEN || seen_value++ || read_length_delimited(&r, &inner) != OK) {
                return DECLINE;
            }
            status = read_any_value(inner, depth + 1, kind, text);
            if (status != OK) {
                return status;
            }
            break;
        case 3:
            return DECLINE;
        default:
            if (skip_field(&r, wire_type) != OK) {
                return DECLINE;
            }
        }
    }
    return OK;
}

static int
validate_key_value(Reader r, int depth)
{
    Reader key, text;
    int kind;
    return read_key_value(r, depth, &key, &kind, &text);
}

/* --- The per-call state: the caller's keys, and texts already built --------------------------------------- */

typedef struct {
    Py_ssize_t key_count;
    const char *key_bytes[MAX_KEYS];
    Py_ssize_t key_lengths[MAX_KEYS];
    int is_count[MAX_KEYS];
    Py_ssize_t max_length;
    /* The key found at each attribute position of the previous record: a gateway's records list the same
     * attributes in the same order, so the first comparison usually finds it. */
    int guess[MAX_KEYS];
    /* Texts already built, by content, a column a key (_interning.h). */
    Texts texts;
} State;

/* The caller's key that a record attribute names, or -1. */
static int
find_key(State *state, int position, const Reader *key)
{
    Py_ssize_t length = key->end - key->p;
    int guess = position < MAX_KEYS ? state->guess[position] : -1;
    if (guess >= 0 && state->key_lengths[guess] == length && memcmp(state->key_bytes[guess], key->p, (size_t)length) == 0) {
        return guess;
    }
    for (int i = 0; i < state->key_count; i++) {
        if (state->key_lengths[i] == length && memcmp(state->key_bytes[i], key->p, (size_t)length) == 0) {
            if (position < MAX_KEYS) {
                state->guess[position] = i;
            }
            return i;
        }
    }
    return -1;
}

/* A count as Envoy writes one: '' (or nothing set) and '-' are unset, else 1 to 9 ASCII digits (below 2^31, the
 * reference's bound, whatever they are); anything else is declined, as otlp_wire._counts declines it. */
static int
count_of(const Reader *text, PyObject **value)
{
    Py_ssize_t length = text->end - text->p;
    if (length == 0 || (length == 1 && text->p[0] == '-')) {
        Py_INCREF(Py_None);
        *value = Py_None;
        return OK;
    }
    if (length > 9) {
        return DECLINE;
    }
    long number = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        uint8_t digit = text->p[i];
        if (digit < '0' || digit > '9') {
            return DECLINE;
        }
        number = number * 10 + (digit - '0');
    }
    *value = PyLong_FromLong(number);
    return *value == NULL ? ERROR : OK;
}

/* --- Resource, ScopeLogs, LogRecord (resource/v1, logs/v1) ---------------------------------------------------- */

/* Resource{repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; repeated EntityRef entity_refs = 3}
 * as a dict: a string value as its text, nothing set as '' (both falsy for the reference), any other kind as
 * None. A key given twice (the reference keeps the last) and entity_refs (strings of their own) are declined. */
static int
read_resource(Reader r, PyObject *attributes)
{
    uint32_t number;
    int wire_type, kind, status;
    uint64_t ignored;
    Reader inner, key, text;
    while (r.p < r.end) {
        if (read_tag(&r, &number, &wire_type) != OK) {
            return DECLINE;
        }
        switch (number) {
        case 1:
            if (wire_type != LEN || read_length_delimited(&r, &inner) != OK) {
                return DECLINE;
            }
            status = read_key_value(inner, 0, &key, &kind, &text);
            if (status != OK) {
                return status;
            }
            {
                PyObject *name = new_text(key.p, key.end - key.p), *value;
                if (name == NULL) {
                    return ERROR;
                }
                if (kind == VALUE_OTHER) {
                    value = Py_NewRef(Py_None);
                }
                else if (kind == VALUE_STRING) {
                    value = new_text(text.p, text.end - text.p);
                }
                else {
                    value = new_text(key.p, 0);
                }
                if (value == NULL) {
                    Py_DECREF(name);
                    return ERROR;
                }
                status = PyDict_Contains(attributes, name);
                if (status == 0) {
                    status = PyDict_SetItem(attributes, name, value) == 0 ? OK : ERROR;
                }
                else {
                    status = status > 0 ? DECLINE : ERROR;
                }
                Py_DECREF(name);
                Py_DECREF(value);
                if (status != OK) {
                    return status;
                }
            }
            break;
        case 2:
            if (wire_type != VARINT || read_varint(&r, &ignored) != OK) {
                return DECLINE;
            }
            break;
        case 3:
            return DECLINE;
        default:
            if (skip_field(&r, wire_type) != OK) {
                return DECLINE;
            }
        }
    }
    return OK;
}

/* InstrumentationScope{string name = 1; string version = 2; repeated KeyValue attributes = 3;
 * uint32 dropped_attributes_count = 4}: validated, not read. */
static int
validate_scope(Reader r)
{
    uint32_t number;
    int wire_type, seen_name = 0, seen_version = 0, status;
    uint64_t ignored;
    Reader inner;
    while (r.p < r.end) {
        if (read_tag(&r, &number, &wire_type) != OK) {
            return DECLINE;
        }
        switch (number) {
        case 1:
        case 2:
            if (wire_type != LEN || (number == 1 ? seen_name++ : seen_version++) || read_plain_string(&r, &inner) != OK) {
                return DECLINE;
            }
            break;
        case 3:
            if (wire_type != LEN || read_length_delimited(&r, &inner) != OK) {
                return DECLINE;
            }
            status = validate_key_value(inner, 0);
            if (status != OK) {
                return status;
            }
            break;
        case 4:
            if (wire_type != VARINT || read_varint(&r, &ignored) != OK) {
                return DECLINE;
            }
            break;
        default:
            if (skip_field(&r, wire_type) != OK) {
                return DECLINE;
            }
        }
    }
    return OK;
}

/* One LogRecord into row `row` of the columns. Fields (logs/v1/logs.proto): time_unix_nano = 1 (fixed64),
 * severity_number = 2 (enum), severity_text = 3, body = 5 (AnyValue), attributes = 6 (KeyValue),
 * dropped_attributes_count = 7, flags = 8 (fixed32), trace_id = 9, span_id = 10 (bytes),
 * observed_time_unix_nano = 11 (fixed64), event_name = 12. The times are not read: the Python side requires
 * start_time and otherwise leaves the export to the upb reading. */
static int
read_record(State *state, Reader r, PyObject **columns, Py_ssize_t row)
{
    PyObject *values[MAX_KEYS] = {NULL};
    uint64_t seen = 0, ignored;
    uint32_t number;
    int wire_type, kind, status = OK, position = 0, seen_severity = 0, seen_body = 0, seen_event_name = 0;
    Reader inner, key, text;
    while (r.p < r.end && status == OK) {
        if (read_tag(&r, &number, &wire_type) != OK) {
            status = DECLINE;
            break;
        }
        switch (number) {
        case 1:
        case 11:
            status = wire_type == I64 ? skip_field(&r, I64) : DECLINE;
            break;
        case 2:
        case 7:
            status = wire_type == VARINT ? read_varint(&r, &ignored) : DECLINE;
            break;
        case 8:
            status = wire_type == I32 ? skip_field(&r, I32) : DECLINE;
            break;
        case 9:
        case 10:
            status = wire_type == LEN ? read_length_delimited(&r, &inner) : DECLINE;
            break;
        case 3:
        case 12:
            if (wire_type != LEN || (number == 3 ? seen_severity++ : seen_event_name++)) {
                status = DECLINE;
                break;
            }
            status = read_plain_string(&r, &inner);
            break;
        case 5: /* the body: a string (Envoy's text line, not read) or nothing; another kind is the reference's */
            if (wire_type != LEN || seen_body++ || read_length_delimited(&r, &inner) != OK) {
                status = DECLINE;
                break;
            }
            status = read_any_value(inner, 0, &kind, &text);
            if (status == OK && kind == VALUE_OTHER) {
                status = DECLINE;
            }
            break;
        case 6: {
            if (wire_type != LEN || read_length_delimited(&r, &inner) != OK) {
                status = DECLINE;
                break;
            }
            status = read_key_value(inner, 0, &key, &kind, &text);
            if (status != OK) {
                break;
            }
            int index = find_key(state, position++, &key);
            if (index < 0 || (seen >> index) & 1 || kind == VALUE_OTHER) {
                status = DECLINE; /* another attribute, one given twice, or not a string */
                break;
            }
            seen |= (uint64_t)1 << index;
            if (kind == VALUE_UNSET) {
                text.p = text.end = key.p; /* nothing set reads as '', as otlp_wire._exact reads it */
            }
            Py_ssize_t length = text.end - text.p;
            if (state->is_count[index]) {
                status = count_of(&text, &values[index]);
            }
            else if (length > state->max_length) {
                status = DECLINE;
            }
            else {
                values[index] = texts_get(&state->texts, index, text.p, length);
                status = values[index] == NULL ? ERROR : OK;
            }
            break;
        }
        default:
            status = skip_field(&r, wire_type) == OK ? OK : DECLINE;
        }
    }
    for (Py_ssize_t i = 0; i < state->key_count; i++) {
        PyObject *value = values[i];
        if (status != OK) {
            Py_XDECREF(value);
            continue;
        }
        PyList_SET_ITEM(columns[i], row, value != NULL ? value : Py_NewRef(Py_None));
    }
    return status;
}

/* ScopeLogs{InstrumentationScope scope = 1; repeated LogRecord log_records = 2; string schema_url = 3} as
 * (number of records, columns), one column (a list, a value a record) per key. */
static int
read_scope_logs(State *state, Reader r, PyObject **result)
{
    uint32_t number;
    int wire_type, seen_scope = 0, seen_schema = 0, status = OK;
    Reader inner, walk = r;
    Py_ssize_t records = 0, row = 0;
    PyObject *columns[MAX_KEYS] = {NULL}, *column_list = NULL;
    /* First the records are counted (tags and lengths only), so that each column is allocated once. */
    while (walk.p < walk.end) {
        if (read_tag(&walk, &number, &wire_type) != OK || skip_field(&walk, wire_type) != OK) {
            return DECLINE;
        }
        records += number == 2;
    }
    column_list = PyList_New(state->key_count);
    if (column_list == NULL) {
        return ERROR;
    }
    for (Py_ssize_t i = 0; i < state->key_count; i++) {
        columns[i] = PyList_New(records); /* its items NULL until set; a list frees NULL items safely */
        if (columns[i] == NULL) {
            Py_DECREF(column_list);
            return ERROR;
        }
        PyList_SET_ITEM(column_list, i, columns[i]);
    }
    while (r.p < r.end && status == OK) {
        if (read_tag(&r, &number, &wire_type) != OK) {
            status = DECLINE;
            break;
        }
        switch (number) {
        case 1:
            if (wire_type != LEN || seen_scope++ || read_length_delimited(&r, &inner) != OK) {
                status = DECLINE;
                break;
            }
            status = validate_scope(inner);
            break;
        case 2:
            if (wire_type != LEN || row >= records || read_length_delimited(&r, &inner) != OK) {
                status = DECLINE;
                break;
            }
            status = read_record(state, inner, columns, row++);
            break;
        case 3:
            status = wire_type == LEN && !seen_schema++ ? read_plain_string(&r, &inner) : DECLINE;
            break;
        default:
            status = skip_field(&r, wire_type) == OK ? OK : DECLINE;
        }
    }
    if (status == OK && row != records) {
        status = DECLINE; /* cannot happen: the same bytes were walked twice */
    }
    if (status == OK) {
        PyObject *count = PyLong_FromSsize_t(records);
        *result = count != NULL ? PyTuple_Pack(2, count, column_list) : NULL;
        Py_XDECREF(count);
        status = *result == NULL ? ERROR : OK;
    }
    Py_DECREF(column_list);
    return status;
}

/* ResourceLogs{Resource resource = 1; repeated ScopeLogs scope_logs = 2; string schema_url = 3} as
 * (resource attributes, [scope, ...]). */
static int
read_resource_logs(State *state, Reader r, PyObject **result)
{
    uint32_t number;
    int wire_type, seen_resource = 0, seen_schema = 0, status = OK;
    Reader inner;
    PyObject *attributes = PyDict_New(), *scopes = PyList_New(0), *scope;
    if (attributes == NULL || scopes == NULL) {
        status = ERROR;
    }
    while (status == OK && r.p < r.end) {
        if (read_tag(&r, &number, &wire_type) != OK) {
            status = DECLINE;
            break;
        }
        switch (number) {
        case 1:
            if (wire_type != LEN || seen_resource++ || read_length_delimited(&r, &inner) != OK) {
                status = DECLINE;
                break;
            }
            status = read_resource(inner, attributes);
            break;
        case 2:
            if (wire_type != LEN || read_length_delimited(&r, &inner) != OK) {
                status = DECLINE;
                break;
            }
            status = read_scope_logs(state, inner, &scope);
            if (status == OK) {
                status = PyList_Append(scopes, scope) == 0 ? OK : ERROR;
                Py_DECREF(scope);
            }
            break;
        case 3:
            status = wire_type == LEN && !seen_schema++ ? read_plain_string(&r, &inner) : DECLINE;
            break;
        default:
            status = skip_field(&r, wire_type) == OK ? OK : DECLINE;
        }
    }
    if (status == OK) {
        *result = PyTuple_Pack(2, attributes, scopes);
        if (*result == NULL) {
            status = ERROR;
        }
    }
    Py_XDECREF(attributes);
    Py_XDECREF(scopes);
    return status;
}

/* ExportLogsServiceRequest{repeated ResourceLogs resource_logs = 1}. */
static int
read_export(State *state, Reader r, PyObject *resources)
{
    uint32_t number;
    int wire_type, status = OK;
    Reader inner;
    PyObject *resource;
    while (status == OK && r.p < r.end) {
        if (read_tag(&r, &number, &wire_type) != OK) {
            return DECLINE;
        }
        if (number != 1) {
            status = skip_field(&r, wire_type) == OK ? OK : DECLINE;
            continue;
        }
        if (wire_type != LEN || read_length_delimited(&r, &inner) != OK) {
            return DECLINE;
        }
        status = read_resource_logs(state, inner, &resource);
        if (status == OK) {
            status = PyList_Append(resources, resource) == 0 ? OK : ERROR;
            Py_DECREF(resource);
        }
    }
    return status;
}

PyDoc_STRVAR(
    SCAN_DOC,
    "scan(body, keys, count_keys, max_length, /)\n--\n\n"
    "An ExportLogsServiceRequest as [(resource attributes, [(records, columns), ...]), ...] per ResourceLogs and\n"
    "ScopeLogs, or None when the scan is not sure. Resource attributes: key -> text, '' when nothing is set, None\n"
    "for another kind. columns[i] holds one value per record for keys[i]: None when the record lacks it; for a\n"
    "key in count_keys an int (1 to 9 ASCII digits) or None ('', '-' or nothing set); otherwise the text ('' when\n"
    "nothing is set), repeated texts sharing one object.\n\n"
    "None for: malformed wire format, groups, a known field with another wire type, a singular message or string\n"
    "field given twice, an AnyValue with two members of its oneof, any string (keys, values, names, severity,\n"
    "schema URLs, nested kvlist and array contents) that is not ASCII without NUL, nesting past 16 values, entity\n"
    "refs or key_strindex, a record attribute whose key is not in keys or is given twice, whose value is not a\n"
    "string (or nothing set), or, for a text key, longer than max_length, a count that is not as above, a body\n"
    "that is set and is not a string. Unknown fields are skipped by their wire type.");

static PyObject *
scan(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer body;
    State state = {0};
    if (nargs != 4 || !PyTuple_Check(args[1]) || !PyTuple_Check(args[2]) || !PyLong_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "scan(body: bytes, keys: tuple, count_keys: tuple, max_length: int)");
        return NULL;
    }
    PyObject *keys = args[1], *count_keys = args[2];
    state.key_count = PyTuple_GET_SIZE(keys);
    state.max_length = PyLong_AsSsize_t(args[3]);
    if (state.max_length < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "max_length must not be negative");
        }
        return NULL;
    }
    if (state.key_count > MAX_KEYS) {
        PyErr_Format(PyExc_ValueError, "at most %d keys", MAX_KEYS);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < state.key_count; i++) {
        PyObject *key = PyTuple_GET_ITEM(keys, i);
        if (!PyUnicode_Check(key) || !PyUnicode_IS_ASCII(key)) {
            PyErr_SetString(PyExc_ValueError, "keys must be ASCII strings");
            return NULL;
        }
        state.key_bytes[i] = PyUnicode_AsUTF8AndSize(key, &state.key_lengths[i]);
        state.is_count[i] = PySequence_Contains(count_keys, key);
        state.guess[i] = -1;
        if (state.key_bytes[i] == NULL || state.is_count[i] < 0) {
            return NULL;
        }
    }
    if (PyObject_GetBuffer(args[0], &body, PyBUF_SIMPLE) != 0) {
        return NULL;
    }
    PyObject *resources = PyList_New(0);
    int status = resources == NULL ? ERROR : OK;
    if (status == OK) {
        Reader reader = {(const uint8_t *)body.buf, (const uint8_t *)body.buf + body.len};
        status = read_export(&state, reader, resources);
    }
    texts_free(&state.texts);
    PyBuffer_Release(&body);
    if (status == OK) {
        return resources;
    }
    Py_XDECREF(resources);
    if (status == ERROR) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef METHODS[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL, SCAN_DOC},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT,
    "_otlp_scan",
    "The OTLP/HTTP protobuf logs export scanned in C for portal.usage.otlp_wire (see _otlp_scan.c).",
    0,
    METHODS,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__otlp_scan(void)
{
    return PyModule_Create(&MODULE);
}
