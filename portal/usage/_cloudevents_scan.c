/* A CloudEvents JSON batch of the gateway's usage events, scanned in C: one strict pass over the body that hands
 * portal/usage/events.py one column per field of the typed reading (events._CloudEvent, _Data, _Usage), or None
 * when it is not sure.
 *
 * Why: decoding the batch into msgspec structs costs about 1.6 µs an event, and reading the structs back a column
 * at a time in Python (attrgetter maps, the usage-or-data choice, zips) about 4.5 more. Here the parse, the type
 * checks and the usage-or-data choice happen in one walk, and repeated texts (sources, credentials, models, routes)
 * are built once per batch.
 *
 * The input is untrusted. Every read is checked against the end of the body, nesting is bounded (MAX_DEPTH), and
 * numbers are read to at most 9 digits. The scan accepts only a subset of JSON (RFC 8259): printable ASCII strings
 * without escapes, integers without sign, fraction or exponent for counts, each known key at most once; that
 * subset msgspec decodes to exactly the values returned here. Anything else is answered with None ("not sure"),
 * and Python then takes msgspec's reading, which reports problems exactly. What it declines, and why, is listed at
 * scan()'s docstring (SCAN_DOC); tests/portal/usage/test_cloudevents_scan.py holds the two readings equal, on a
 * differential fuzz too. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_interning.h"

/* Outcomes of a read: OK, DECLINE (not in the sure subset; no Python error set), or ERROR (a Python error is set,
 * e.g. MemoryError). */
enum { OK = 0, DECLINE = 1, ERROR = 2 };

/* Nesting inside an unknown key's value that is validated before declining (the schema's own objects are three
 * deep). msgspec skips unknown values to its recursion limit (about a thousand), so a bound this low never accepts
 * what msgspec refuses. */
#define MAX_DEPTH 8
/* The longest time text read; a longer one is declined (whatever datetime.fromisoformat would make of it: an
 * RFC 3339 date-time with microseconds and an offset is 32 characters). */
#define MAX_TIME_LENGTH 64

/* The columns, in the order of COLUMNS (and of events._SCAN_COLUMNS). The last five are the token counts of
 * data.usage when it is an object, else of data itself (events._fast_record: data.usage if not None else data). */
enum {
    SPECVERSION, TYPE, SOURCE, ID, TIME, SUBJECT,
    REQUEST_ID, CREDENTIAL_ID, MODEL_OVERRIDE, MODEL_REQUESTED, MODEL_RESPONSE, MODEL,
    PROVIDER, BACKEND, ROUTE, STATUS_CODE, DURATION_MS, TIME_TO_FIRST_TOKEN_MS,
    TOKENS, /* the five token columns start here */
    COLUMN_COUNT = TOKENS + 5,
};

_Static_assert(COLUMN_COUNT <= TEXTS_COLUMNS, "every column may intern its texts");

static const char *const COLUMN_NAMES[COLUMN_COUNT] = {
    "specversion", "type", "source", "id", "time", "subject",
    "request_id", "credential_id", "model_override", "model_requested", "model_response", "model",
    "provider", "backend", "route", "status_code", "duration_ms", "time_to_first_token_ms",
    "input_tokens", "cached_input_tokens", "cache_creation_input_tokens", "output_tokens", "reasoning_tokens",
};

/* What a key's value must be. */
enum {
    REQUIRED_TEXT, /* a string (msgspec's `str`) */
    TEXT,          /* a string or null (`str | None`) */
    COUNT,         /* an integer or null (`int | None`) */
    TOKEN,         /* the same, a token count (kept aside until data.usage is known) */
    DATA,          /* data: an object (`_Data`) */
    USAGE,         /* data.usage: an object or null (`_Usage | None`) */
};

typedef struct {
    const char *name;
    size_t name_length;
    int kind;
    int slot;              /* the column, or for a TOKEN its place among the five */
    Py_ssize_t max_length; /* for texts: longer ones are declined */
} Field;

#define FIELD(name, kind, slot, max_length) {name, sizeof(name) - 1, kind, slot, max_length}

/* The bounds are events._plain's (MAX_TEXT 255; 200 for ids and credentials; 500 for routes): a longer text makes
 * the columnar reading unsure, so declining it here changes nothing but the path taken. specversion and type are
 * compared with short constants, and a time has its own bound (MAX_TIME_LENGTH). */
static const Field EVENT_FIELDS[] = {
    FIELD("specversion", REQUIRED_TEXT, SPECVERSION, 255),
    FIELD("type", REQUIRED_TEXT, TYPE, 255),
    FIELD("source", REQUIRED_TEXT, SOURCE, 255),
    FIELD("id", TEXT, ID, 200),
    FIELD("time", REQUIRED_TEXT, TIME, MAX_TIME_LENGTH),
    FIELD("subject", TEXT, SUBJECT, 200),
    FIELD("data", DATA, 0, 0),
};

/* _Data's fields, _Usage's five token counts among them. */
static const Field DATA_FIELDS[] = {
    FIELD("request_id", TEXT, REQUEST_ID, 255),
    FIELD("credential_id", TEXT, CREDENTIAL_ID, 200),
    FIELD("model_override", TEXT, MODEL_OVERRIDE, 255),
    FIELD("model_requested", TEXT, MODEL_REQUESTED, 255),
    FIELD("model_response", TEXT, MODEL_RESPONSE, 255),
    FIELD("model", TEXT, MODEL, 255),
    FIELD("provider", TEXT, PROVIDER, 255),
    FIELD("backend", TEXT, BACKEND, 255),
    FIELD("route", TEXT, ROUTE, 500),
    FIELD("status_code", COUNT, STATUS_CODE, 0),
    FIELD("duration_ms", COUNT, DURATION_MS, 0),
    FIELD("time_to_first_token_ms", COUNT, TIME_TO_FIRST_TOKEN_MS, 0),
    FIELD("input_tokens", TOKEN, 0, 0),
    FIELD("cached_input_tokens", TOKEN, 1, 0),
    FIELD("cache_creation_input_tokens", TOKEN, 2, 0),
    FIELD("output_tokens", TOKEN, 3, 0),
    FIELD("reasoning_tokens", TOKEN, 4, 0),
    FIELD("usage", USAGE, 0, 0),
};

static const Field USAGE_FIELDS[] = {
    FIELD("input_tokens", TOKEN, 0, 0),
    FIELD("cached_input_tokens", TOKEN, 1, 0),
    FIELD("cache_creation_input_tokens", TOKEN, 2, 0),
    FIELD("output_tokens", TOKEN, 3, 0),
    FIELD("reasoning_tokens", TOKEN, 4, 0),
};

#define COUNT_OF(array) ((int)(sizeof(array) / sizeof((array)[0])))
#define EVENT_FIELD_COUNT COUNT_OF(EVENT_FIELDS)
#define DATA_FIELD_COUNT COUNT_OF(DATA_FIELDS)
#define USAGE_FIELD_COUNT COUNT_OF(USAGE_FIELDS)

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Reader;

/* --- The per-call state: texts already built, and the rows read ------------------------------------------- */

typedef struct {
    /* Texts already built, by content, a column a field (_interning.h). */
    Texts texts;
    /* The values read, an array a column (each a new reference), `rows` of them so far. */
    PyObject **cells[COLUMN_COUNT];
    Py_ssize_t rows, row_capacity, max_rows;
} State;

/* An event's values appended to the columns (their references move); ERROR when the columns cannot grow. */
static int
store_row(State *state, PyObject **row)
{
    if (state->rows == state->row_capacity) {
        Py_ssize_t capacity = state->row_capacity ? state->row_capacity * 2 : 256;
        if (capacity > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(PyObject *)) {
            PyErr_NoMemory();
            return ERROR;
        }
        for (int column = 0; column < COLUMN_COUNT; column++) {
            PyObject **cells = PyMem_Realloc(state->cells[column], (size_t)capacity * sizeof(PyObject *));
            if (cells == NULL) {
                PyErr_NoMemory();
                return ERROR; /* the arrays grown so far are freed whole, their first `rows` values released */
            }
            state->cells[column] = cells;
        }
        state->row_capacity = capacity;
    }
    for (int column = 0; column < COLUMN_COUNT; column++) {
        state->cells[column][state->rows] = row[column];
    }
    state->rows++;
    return OK;
}

static void
free_state(State *state)
{
    texts_free(&state->texts);
    for (int column = 0; column < COLUMN_COUNT; column++) {
        for (Py_ssize_t row = 0; row < state->rows; row++) {
            Py_XDECREF(state->cells[column][row]);
        }
        PyMem_Free(state->cells[column]);
    }
}

/* --- JSON, the sure subset (RFC 8259) --------------------------------------------------------------------- */

/* Insignificant whitespace: space, tab, line feed, carriage return (RFC 8259 section 2), as msgspec skips it. */
static void
skip_whitespace(Reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t')) {
        r->p++;
    }
}

/* The next byte after whitespace, consumed when it is `expected`. */
/* After an object's member or an array's element: a comma (another follows, *end = 0) or the closing character
 * (*end = 1); anything else is DECLINE. */
static int
after_member(Reader *r, uint8_t closing, int *end)
{
    skip_whitespace(r);
    if (r->p >= r->end) {
        return DECLINE;
    }
    uint8_t next = *r->p++;
    *end = next == closing;
    return *end || next == ',' ? OK : DECLINE;
}

static int
expect(Reader *r, uint8_t expected)
{
    skip_whitespace(r);
    if (r->p >= r->end || *r->p != expected) {
        return DECLINE;
    }
    r->p++;
    return OK;
}

/* True when a word of 8 bytes holds a byte that ends or leaves the plain run of a string: '"', '\\', below 0x20 or
 * past 0x7E. Each test is exact about whether some byte matches (not which):
 * graphics.stanford.edu/~seander/bithacks.html, "Determine if a word has a zero byte", "... a byte less than n",
 * "... a byte greater than n". */
static inline int
has_special_byte(uint64_t word)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = word ^ (ones * '"'), backslash = word ^ (ones * '\\');
    uint64_t found = ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash) | ((word - ones * 0x20) & ~word) |
                     ((word + ones * (127 - 0x7E)) | word);
    return (found & highs) != 0;
}

/* A string's contents (r->p at its opening quote). Only printable ASCII (0x20 to 0x7E) without escapes: then the
 * contents are the text, one character a byte, valid UTF-8 and without NUL. A backslash (an escape msgspec would
 * decode), a control character (invalid JSON unescaped) and any byte past 0x7E are declined. The plain run is
 * skipped 8 bytes at a time; the word holding its end is read byte by byte. */
static int
read_string(Reader *r, const uint8_t **start, Py_ssize_t *length)
{
    const uint8_t *p = r->p + 1, *end = r->end;
    while (end - p >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        if (has_special_byte(word)) {
            break;
        }
        p += 8;
    }
    for (; p < end; p++) {
        uint8_t byte = *p;
        if (byte == '"') {
            *start = r->p + 1;
            *length = p - *start;
            r->p = p + 1;
            return OK;
        }
        if (byte < 0x20 || byte > 0x7E || byte == '\\') {
            return DECLINE;
        }
    }
    return DECLINE; /* unterminated */
}

/* One of the literals null, true, false when the body continues with it. */
static int
read_literal(Reader *r, const char *literal, size_t length)
{
    if ((size_t)(r->end - r->p) < length || memcmp(r->p, literal, length) != 0) {
        return DECLINE;
    }
    r->p += length;
    return OK;
}

static int
is_digit(const Reader *r)
{
    return r->p < r->end && *r->p >= '0' && *r->p <= '9';
}

/* A number as RFC 8259 section 6 has it: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, validated, not read (the
 * value of an unknown key). */
static int
skip_number(Reader *r)
{
    if (r->p < r->end && *r->p == '-') {
        r->p++;
    }
    if (!is_digit(r)) {
        return DECLINE;
    }
    if (*r->p++ != '0') {
        while (is_digit(r)) {
            r->p++;
        }
    }
    if (r->p < r->end && *r->p == '.') {
        r->p++;
        if (!is_digit(r)) {
            return DECLINE;
        }
        while (is_digit(r)) {
            r->p++;
        }
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) {
            r->p++;
        }
        if (!is_digit(r)) {
            return DECLINE;
        }
        while (is_digit(r)) {
            r->p++;
        }
    }
    return OK;
}

/* The value of an unknown key (msgspec ignores unknown keys of a struct): validated as JSON in the sure subset,
 * to MAX_DEPTH levels of arrays and objects, and skipped. */
static int
skip_value(Reader *r, int depth)
{
    const uint8_t *ignored;
    Py_ssize_t length;
    skip_whitespace(r);
    if (r->p >= r->end || depth > MAX_DEPTH) {
        return DECLINE;
    }
    switch (*r->p) {
    case '"':
        return read_string(r, &ignored, &length);
    case 'n':
        return read_literal(r, "null", 4);
    case 't':
        return read_literal(r, "true", 4);
    case 'f':
        return read_literal(r, "false", 5);
    case '[':
    case '{': {
        uint8_t close = *r->p == '[' ? ']' : '}';
        r->p++;
        skip_whitespace(r);
        if (r->p < r->end && *r->p == close) {
            r->p++;
            return OK;
        }
        for (;;) {
            if (close == '}') {
                skip_whitespace(r);
                if (r->p >= r->end || *r->p != '"' || read_string(r, &ignored, &length) != OK ||
                    expect(r, ':') != OK) {
                    return DECLINE;
                }
            }
            if (skip_value(r, depth + 1) != OK) {
                return DECLINE;
            }
            skip_whitespace(r);
            if (r->p >= r->end) {
                return DECLINE;
            }
            uint8_t next = *r->p++;
            if (next == close) {
                return OK;
            }
            if (next != ',') {
                return DECLINE;
            }
        }
    }
    default:
        return skip_number(r);
    }
}

/* A count: null, or an integer of 1 to 9 digits (below the reference's bound of 2^31 - 1, whatever they are). A
 * sign, a leading zero (invalid JSON), a fraction or exponent (msgspec's `int` refuses 1.0 and 1e2), true and false
 * are declined, as are 10 digits and more. */
static int
read_count(Reader *r, PyObject **value)
{
    if (r->p < r->end && *r->p == 'n') {
        if (read_literal(r, "null", 4) != OK) {
            return DECLINE;
        }
        *value = Py_NewRef(Py_None);
        return OK;
    }
    if (!is_digit(r)) {
        return DECLINE;
    }
    long number = 0;
    if (*r->p == '0') {
        r->p++;
    }
    else {
        for (int digits = 0; digits < 9 && is_digit(r); digits++) {
            number = number * 10 + (*r->p++ - '0');
        }
    }
    if (is_digit(r) || (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E'))) {
        return DECLINE;
    }
    *value = PyLong_FromLong(number);
    return *value == NULL ? ERROR : OK;
}

/* A text: a string (within the field's bound) or, unless required, null. */
static int
read_text(State *state, Reader *r, const Field *field, PyObject **value)
{
    const uint8_t *start;
    Py_ssize_t length;
    if (r->p < r->end && *r->p == 'n' && field->kind == TEXT) {
        if (read_literal(r, "null", 4) != OK) {
            return DECLINE;
        }
        *value = Py_NewRef(Py_None);
        return OK;
    }
    if (r->p >= r->end || *r->p != '"' || read_string(r, &start, &length) != OK || length > field->max_length) {
        return DECLINE;
    }
    *value = texts_get(&state->texts, field->slot, start, length);
    return *value == NULL ? ERROR : OK;
}

/* The field a key names, or NULL for an unknown key; `guess` (the field expected at this position of the object
 * next time) becomes it. */
static const Field *
find_field(const Field *fields, int count, int *guess, const uint8_t *key, Py_ssize_t length)
{
    for (int i = 0; i < count; i++) {
        if (fields[i].name_length == (size_t)length && same_bytes(fields[i].name, key, (size_t)length)) {
            *guess = i;
            return &fields[i];
        }
    }
    return NULL;
}

/* An event being read: its row, and the token counts of data and of data.usage until the choice is known. */
typedef struct {
    PyObject *row[COLUMN_COUNT];
    PyObject *tokens[2][5]; /* [0]: data's own, [1]: data.usage's */
    int usage_is_object;
} Event;

#define MAX_POSITIONS 32
typedef struct {
    int event[MAX_POSITIONS], data[MAX_POSITIONS], usage[MAX_POSITIONS];
} Guesses;

static int read_object(State *state, Reader *r, Event *event, const Field *fields, int count, int *guesses,
                       Guesses *all);

/* The value of a known key, into its cell (or token slot). */
static int
read_field(State *state, Reader *r, Event *event, const Field *field, Guesses *guesses)
{
    skip_whitespace(r);
    switch (field->kind) {
    case REQUIRED_TEXT:
    case TEXT:
        return read_text(state, r, field, &event->row[field->slot]);
    case COUNT:
        return read_count(r, &event->row[field->slot]);
    case TOKEN: {
        /* the same key in data and in data.usage are two fields: each is checked for a repeat of its own */
        int in_usage = field >= USAGE_FIELDS && field < USAGE_FIELDS + USAGE_FIELD_COUNT;
        return read_count(r, &event->tokens[in_usage][field->slot]);
    }
    case DATA:
        if (r->p >= r->end || *r->p != '{') {
            return DECLINE; /* data is required and must be an object */
        }
        return read_object(state, r, event, DATA_FIELDS, DATA_FIELD_COUNT, guesses->data, guesses);
    case USAGE:
        if (r->p < r->end && *r->p == 'n') {
            return read_literal(r, "null", 4);
        }
        if (r->p >= r->end || *r->p != '{') {
            return DECLINE;
        }
        event->usage_is_object = 1;
        return read_object(state, r, event, USAGE_FIELDS, USAGE_FIELD_COUNT, guesses->usage, guesses);
    default:
        return DECLINE;
    }
}

/* An object of the schema (an event, its data, data.usage), r->p at its '{'. A known key given twice is declined
 * (msgspec keeps the last, a reading the scan leaves to it); unknown keys are skipped. */
static int
read_object(State *state, Reader *r, Event *event, const Field *fields, int count, int *guesses, Guesses *all)
{
    uint32_t seen = 0;
    const uint8_t *key;
    Py_ssize_t length;
    int status, position = 0;
    r->p++;
    skip_whitespace(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        goto done;
    }
    for (;;) {
        skip_whitespace(r);
        if (r->p >= r->end || *r->p != '"') {
            return DECLINE;
        }
        int unused = -1;
        int *guess = position < MAX_POSITIONS ? &guesses[position] : &unused;
        position++;
        const Field *field = NULL;
        if (*guess >= 0 && *guess < count) {
            /* the key guessed, when the body holds its name and the closing quote next: a gateway writes its keys
             * in the same order every time, and then the key needs no reading of its own */
            const Field *guessed = &fields[*guess];
            if ((size_t)(r->end - r->p) > guessed->name_length + 1 &&
                same_bytes(r->p + 1, guessed->name, guessed->name_length) && r->p[guessed->name_length + 1] == '"') {
                field = guessed;
                r->p += guessed->name_length + 2;
            }
        }
        if (field == NULL) {
            if (read_string(r, &key, &length) != OK) {
                return DECLINE;
            }
            field = find_field(fields, count, guess, key, length);
        }
        if (expect(r, ':') != OK) {
            return DECLINE;
        }
        if (field == NULL) {
            status = skip_value(r, 1);
        }
        else {
            uint32_t bit = (uint32_t)1 << (field - fields);
            if (seen & bit) {
                return DECLINE;
            }
            seen |= bit;
            status = read_field(state, r, event, field, all);
        }
        if (status != OK) {
            return status;
        }
        int end = 0;
        if (after_member(r, '}', &end) != OK) {
            return DECLINE;
        }
        if (end) {
            break;
        }
    }
done:
    /* msgspec requires the fields without a default: an event's specversion, type, source, time and data */
    for (int i = 0; i < count; i++) {
        if ((fields[i].kind == REQUIRED_TEXT || fields[i].kind == DATA) && !(seen & ((uint32_t)1 << i))) {
            return DECLINE;
        }
    }
    return OK;
}

/* One event, r->p at its '{', appended to the columns: absent optional fields are None, and the token columns
 * hold data.usage's counts when it is an object, else data's own. */
static int
read_event(State *state, Reader *r, Guesses *guesses)
{
    Event event = {0};
    int status = read_object(state, r, &event, EVENT_FIELDS, EVENT_FIELD_COUNT, guesses->event, guesses);
    for (int i = 0; i < 5; i++) {
        Py_XDECREF(event.tokens[!event.usage_is_object][i]);
        event.row[TOKENS + i] = event.tokens[event.usage_is_object][i];
    }
    if (status == OK) {
        for (int column = 0; column < COLUMN_COUNT; column++) {
            if (event.row[column] == NULL) {
                event.row[column] = Py_NewRef(Py_None);
            }
        }
        status = store_row(state, event.row);
    }
    if (status != OK) {
        for (int column = 0; column < COLUMN_COUNT; column++) {
            Py_XDECREF(event.row[column]);
        }
    }
    return status;
}

/* The batch: a JSON array of events, with nothing but whitespace around it. */
static int
read_batch(State *state, Reader *r)
{
    Guesses guesses;
    memset(&guesses, 0xff, sizeof(guesses)); /* every guess -1: none yet */
    if (expect(r, '[') != OK) {
        return DECLINE;
    }
    skip_whitespace(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
    }
    else {
        for (;;) {
            skip_whitespace(r);
            if (r->p >= r->end || *r->p != '{' || state->rows >= state->max_rows) {
                return DECLINE; /* not an object, or more events than the caller takes */
            }
            int status = read_event(state, r, &guesses);
            if (status != OK) {
                return status;
            }
            int end = 0;
            if (after_member(r, ']', &end) != OK) {
                return DECLINE;
            }
            if (end) {
                break;
            }
        }
    }
    skip_whitespace(r);
    return r->p == r->end ? OK : DECLINE;
}

/* The rows as one list a column. The cells' references move into the lists. */
static PyObject *
columns_of(State *state)
{
    PyObject *columns = PyList_New(COLUMN_COUNT);
    if (columns == NULL) {
        return NULL;
    }
    for (int column = 0; column < COLUMN_COUNT; column++) {
        PyObject *values = PyList_New(state->rows);
        if (values == NULL) {
            Py_DECREF(columns);
            return NULL;
        }
        PyList_SET_ITEM(columns, column, values);
    }
    for (int column = 0; column < COLUMN_COUNT; column++) {
        PyObject *values = PyList_GET_ITEM(columns, column);
        for (Py_ssize_t row = 0; row < state->rows; row++) {
            PyList_SET_ITEM(values, row, state->cells[column][row]);
        }
    }
    state->rows = 0; /* the lists hold the references now */
    return columns;
}

PyDoc_STRVAR(
    SCAN_DOC,
    "scan(body, max_events, /)\n--\n\n"
    "A CloudEvents JSON batch as one list a column (COLUMNS), one value an event: text, int or None (an optional\n"
    "field absent or null); the token columns hold data.usage's counts when it is an object, else data's own.\n"
    "Repeated texts share one object. None when the scan is not sure.\n\n"
    "None for: a body that is not one JSON array of objects with only whitespace (space, tab, LF, CR) around\n"
    "and between tokens; more than max_events events; any string (keys included) holding a backslash, a byte\n"
    "below 0x20 or past 0x7E, or left open; a known key given twice (in an event, data or data.usage); a missing\n"
    "specversion, type, source, time or data; a value of another JSON type than its field's (null for a required\n"
    "text, a number or bool for a text, data not an object, usage neither an object nor null); a count that is\n"
    "not null or an unsigned integer of at most 9 digits without leading zero, fraction or exponent; a text longer\n"
    "than its field's bound (200 for id, subject and credential_id, 500 for route, 64 for time, 255 otherwise);\n"
    "an unknown key's value that is not valid JSON in the same subset (numbers as RFC 8259 has them) or nests\n"
    "past 8 levels; a missing or trailing comma, or anything else after the array.");

static PyObject *
scan(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer body;
    State state = {0};
    if (nargs != 2 || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "scan(body: bytes, max_events: int)");
        return NULL;
    }
    state.max_rows = PyLong_AsSsize_t(args[1]);
    if (state.max_rows < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "max_events must not be negative");
        }
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &body, PyBUF_SIMPLE) != 0) {
        return NULL;
    }
    Reader reader = {(const uint8_t *)body.buf, (const uint8_t *)body.buf + body.len};
    int status = read_batch(&state, &reader);
    PyObject *columns = status == OK ? columns_of(&state) : NULL;
    free_state(&state);
    PyBuffer_Release(&body);
    if (status == OK || status == ERROR) {
        return columns; /* NULL with the error set when it is one */
    }
    Py_RETURN_NONE;
}

static PyMethodDef METHODS[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL, SCAN_DOC},
    {NULL, NULL, 0, NULL},
};

static int
add_columns(PyObject *module)
{
    PyObject *names = PyTuple_New(COLUMN_COUNT);
    if (names == NULL) {
        return -1;
    }
    for (int i = 0; i < COLUMN_COUNT; i++) {
        PyObject *name = PyUnicode_FromString(COLUMN_NAMES[i]);
        if (name == NULL) {
            Py_DECREF(names);
            return -1;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    int status = PyModule_AddObjectRef(module, "COLUMNS", names);
    Py_DECREF(names);
    return status;
}

static PyModuleDef_Slot SLOTS[] = {
    {Py_mod_exec, add_columns},
    {0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT,
    "_cloudevents_scan",
    "CloudEvents JSON batches scanned in C for portal.usage.events (see _cloudevents_scan.c).",
    0,
    METHODS,
    SLOTS,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__cloudevents_scan(void)
{
    return PyModuleDef_Init(&MODULE);
}
