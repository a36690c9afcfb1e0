/* A small, strict JSON reader for the artifact contract (RFC 8259; no extensions).
 *
 * The whole text is parsed into one array of values; strings are decoded (escapes, UTF-16
 * surrogate pairs) into one character block. Sizes are bounded by the text: callers limit
 * the text's length, the parser limits nesting. Numbers are read with the "C" locale
 * whatever the process's locale is, and rounded correctly (strtod). */
#ifndef ISDNET_JSON_H
#define ISDNET_JSON_H

#include <stddef.h>

typedef enum {
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT
} json_type;

#define JSON_NONE ((size_t)-1)

typedef struct {
    json_type type;
    double number;      /* JSON_NUMBER */
    size_t string;      /* JSON_STRING: offset of the decoded, NUL-terminated text */
    size_t key;         /* member of an object: offset of its decoded key, else JSON_NONE */
    size_t count;       /* JSON_ARRAY / JSON_OBJECT: number of elements or members */
    size_t first;       /* first element or member, or JSON_NONE */
    size_t next;        /* next sibling, or JSON_NONE */
} json_value;

typedef struct {
    json_value *values; /* values[0] is the root */
    size_t count, capacity;
    char *chars;        /* decoded strings */
    size_t used, chars_capacity;
} json_doc;

/* Parses `length` bytes of `text`. Returns 0, or -1 with a short reason in `error` (and
 * `doc` empty). Free a parsed document with json_free(). */
int json_parse(const char *text, size_t length, json_doc *doc, char *error, size_t error_size);
void json_free(json_doc *doc);

const json_value *json_root(const json_doc *doc);
/* The member `key` of an object (the last one if repeated), or NULL (also for a
 * non-object). */
const json_value *json_member(const json_doc *doc, const json_value *object, const char *key);
/* Element `index` of an array, or NULL. */
const json_value *json_element(const json_doc *doc, const json_value *array, size_t index);
/* The text of a string value, or NULL for another type. */
const char *json_string(const json_doc *doc, const json_value *value);

#endif
