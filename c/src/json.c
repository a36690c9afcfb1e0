#define _POSIX_C_SOURCE 200809L
#include "json.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32
#define MAX_NUMBER_CHARS 63

typedef struct {
    const char *text;
    size_t length, pos;
    json_doc *doc;
    char *error;
    size_t error_size;
} parser;

static int fail(parser *p, const char *what)
{
    snprintf(p->error, p->error_size, "%s at byte %zu", what, p->pos);
    return -1;
}

static void skip_space(parser *p)
{
    while (p->pos < p->length) {
        char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        p->pos++;
    }
}

static int new_value(parser *p, json_type type, size_t *index)
{
    json_doc *doc = p->doc;
    if (doc->count == doc->capacity) {
        size_t capacity = doc->capacity ? 2 * doc->capacity : 64;
        json_value *grown = realloc(doc->values, capacity * sizeof *grown);
        if (!grown)
            return fail(p, "out of memory");
        doc->values = grown;
        doc->capacity = capacity;
    }
    json_value *v = &doc->values[doc->count];
    memset(v, 0, sizeof *v);
    v->type = type;
    v->key = v->first = v->next = v->string = JSON_NONE;
    *index = doc->count++;
    return 0;
}

/* Room for `extra` more decoded bytes. */
static int reserve_chars(parser *p, size_t extra)
{
    json_doc *doc = p->doc;
    if (doc->chars_capacity - doc->used >= extra)
        return 0;
    size_t capacity = doc->chars_capacity ? doc->chars_capacity : 256;
    while (capacity - doc->used < extra)
        capacity *= 2;
    char *grown = realloc(doc->chars, capacity);
    if (!grown)
        return fail(p, "out of memory");
    doc->chars = grown;
    doc->chars_capacity = capacity;
    return 0;
}

static int hex4(parser *p, unsigned *out)
{
    if (p->length - p->pos < 4)
        return fail(p, "truncated \\u escape");
    unsigned value = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->text[p->pos++];
        value <<= 4;
        if (c >= '0' && c <= '9')
            value |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            value |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            value |= (unsigned)(c - 'A' + 10);
        else
            return fail(p, "bad \\u escape");
    }
    *out = value;
    return 0;
}

static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at text[pos] (lead byte >= 0x80), or 0. */
static size_t utf8_length(const unsigned char *s, size_t available)
{
    size_t n;
    unsigned cp;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        n = 2;
        cp = s[0] & 0x1Fu;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        n = 3;
        cp = s[0] & 0x0Fu;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        n = 4;
        cp = s[0] & 0x07u;
    } else {
        return 0;
    }
    if (available < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Decodes the string starting at the opening quote; *offset gets its place in doc->chars. */
static int parse_string(parser *p, size_t *offset)
{
    p->pos++; /* opening quote */
    /* Decoded text is never longer than its JSON form. */
    if (reserve_chars(p, p->length - p->pos + 1))
        return -1;
    json_doc *doc = p->doc;
    size_t start = doc->used;
    char *out = doc->chars + start;
    size_t n = 0;
    for (;;) {
        if (p->pos >= p->length)
            return fail(p, "unterminated string");
        unsigned char c = (unsigned char)p->text[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20)
            return fail(p, "control character in string");
        if (c >= 0x80) {
            size_t len = utf8_length((const unsigned char *)p->text + p->pos, p->length - p->pos);
            if (!len)
                return fail(p, "invalid UTF-8 in string");
            memcpy(out + n, p->text + p->pos, len);
            n += len;
            p->pos += len;
            continue;
        }
        p->pos++;
        if (c != '\\') {
            out[n++] = (char)c;
            continue;
        }
        if (p->pos >= p->length)
            return fail(p, "unterminated escape");
        char e = p->text[p->pos++];
        switch (e) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (hex4(p, &cp))
                return -1;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return fail(p, "lone low surrogate");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned low;
                if (p->length - p->pos < 2 || p->text[p->pos] != '\\' ||
                    p->text[p->pos + 1] != 'u')
                    return fail(p, "lone high surrogate");
                p->pos += 2;
                if (hex4(p, &low))
                    return -1;
                if (low < 0xDC00 || low > 0xDFFF)
                    return fail(p, "bad surrogate pair");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            if (cp == 0)
                return fail(p, "NUL character in string");
            n += put_utf8(out + n, cp);
            break;
        }
        default:
            return fail(p, "bad escape");
        }
    }
    out[n] = '\0';
    doc->used = start + n + 1;
    *offset = start;
    return 0;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int parse_number(parser *p, double *out)
{
    size_t start = p->pos;
    const char *t = p->text;
    size_t i = p->pos, end = p->length;
    if (i < end && t[i] == '-')
        i++;
    if (i < end && t[i] == '0') {
        i++;
    } else if (i < end && t[i] >= '1' && t[i] <= '9') {
        while (i < end && is_digit(t[i]))
            i++;
    } else {
        return fail(p, "bad number");
    }
    if (i < end && t[i] == '.') {
        i++;
        if (i >= end || !is_digit(t[i]))
            return fail(p, "bad number");
        while (i < end && is_digit(t[i]))
            i++;
    }
    if (i < end && (t[i] == 'e' || t[i] == 'E')) {
        i++;
        if (i < end && (t[i] == '+' || t[i] == '-'))
            i++;
        if (i >= end || !is_digit(t[i]))
            return fail(p, "bad number");
        while (i < end && is_digit(t[i]))
            i++;
    }
    if (i - start > MAX_NUMBER_CHARS)
        return fail(p, "number too long");
    char buffer[MAX_NUMBER_CHARS + 1];
    memcpy(buffer, t + start, i - start);
    buffer[i - start] = '\0';
    double value = strtod(buffer, NULL); /* the "C" numeric locale is in effect */
    if (isinf(value))
        return fail(p, "number out of range");
    p->pos = i;
    *out = value;
    return 0;
}

static int parse_literal(parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->length - p->pos < n || memcmp(p->text + p->pos, word, n) != 0)
        return fail(p, "unexpected character");
    p->pos += n;
    return 0;
}

static int parse_value(parser *p, size_t *index, int depth);

/* Parses the elements (or members) of the array (object) at values[index]. */
static int parse_container(parser *p, size_t index, int depth, int object)
{
    char close = object ? '}' : ']';
    p->pos++; /* opening bracket */
    skip_space(p);
    if (p->pos < p->length && p->text[p->pos] == close) {
        p->pos++;
        return 0;
    }
    size_t last = JSON_NONE;
    for (;;) {
        size_t key = JSON_NONE, child;
        skip_space(p);
        if (object) {
            if (p->pos >= p->length || p->text[p->pos] != '"')
                return fail(p, "expected a member name");
            if (parse_string(p, &key))
                return -1;
            skip_space(p);
            if (p->pos >= p->length || p->text[p->pos] != ':')
                return fail(p, "expected ':'");
            p->pos++;
        }
        if (parse_value(p, &child, depth + 1))
            return -1;
        json_value *values = p->doc->values;
        values[child].key = key;
        if (last == JSON_NONE)
            values[index].first = child;
        else
            values[last].next = child;
        last = child;
        values[index].count++;
        skip_space(p);
        if (p->pos >= p->length)
            return fail(p, object ? "unterminated object" : "unterminated array");
        char c = p->text[p->pos++];
        if (c == close)
            return 0;
        if (c != ',')
            return fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int parse_value(parser *p, size_t *index, int depth)
{
    if (depth > MAX_DEPTH)
        return fail(p, "nesting too deep");
    skip_space(p);
    if (p->pos >= p->length)
        return fail(p, "unexpected end of text");
    char c = p->text[p->pos];
    switch (c) {
    case '{':
    case '[':
        if (new_value(p, c == '{' ? JSON_OBJECT : JSON_ARRAY, index))
            return -1;
        return parse_container(p, *index, depth, c == '{');
    case '"': {
        size_t offset;
        if (parse_string(p, &offset) || new_value(p, JSON_STRING, index))
            return -1;
        p->doc->values[*index].string = offset;
        return 0;
    }
    case 't':
        return parse_literal(p, "true") ? -1 : new_value(p, JSON_TRUE, index);
    case 'f':
        return parse_literal(p, "false") ? -1 : new_value(p, JSON_FALSE, index);
    case 'n':
        return parse_literal(p, "null") ? -1 : new_value(p, JSON_NULL, index);
    default: {
        double number;
        if (parse_number(p, &number) || new_value(p, JSON_NUMBER, index))
            return -1;
        p->doc->values[*index].number = number;
        return 0;
    }
    }
}

int json_parse(const char *text, size_t length, json_doc *doc, char *error, size_t error_size)
{
    memset(doc, 0, sizeof *doc);
    parser p = {text, length, 0, doc, error, error_size};
    locale_t c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (c_locale == (locale_t)0) {
        snprintf(error, error_size, "cannot create the C locale");
        return -1;
    }
    locale_t previous = uselocale(c_locale);
    size_t root;
    int rc = parse_value(&p, &root, 0);
    uselocale(previous);
    freelocale(c_locale);
    if (rc == 0) {
        skip_space(&p);
        if (p.pos != p.length)
            rc = fail(&p, "text after the value");
    }
    if (rc != 0)
        json_free(doc);
    return rc;
}

void json_free(json_doc *doc)
{
    free(doc->values);
    free(doc->chars);
    memset(doc, 0, sizeof *doc);
}

const json_value *json_root(const json_doc *doc)
{
    return doc->count ? &doc->values[0] : NULL;
}

const json_value *json_member(const json_doc *doc, const json_value *object, const char *key)
{
    if (!object || object->type != JSON_OBJECT)
        return NULL;
    const json_value *found = NULL; /* the last of repeated names wins, as in Python */
    for (size_t i = object->first; i != JSON_NONE; i = doc->values[i].next) {
        if (strcmp(doc->chars + doc->values[i].key, key) == 0)
            found = &doc->values[i];
    }
    return found;
}

const json_value *json_element(const json_doc *doc, const json_value *array, size_t index)
{
    if (!array || array->type != JSON_ARRAY || index >= array->count)
        return NULL;
    size_t i = array->first;
    while (index--)
        i = doc->values[i].next;
    return &doc->values[i];
}

const char *json_string(const json_doc *doc, const json_value *value)
{
    return value && value->type == JSON_STRING ? doc->chars + value->string : NULL;
}
