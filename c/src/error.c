/* The only state of the library outside a model: each thread's last error message. */
#include "internal.h"
#include "isdnet.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];

int isd__fail(int code, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(last_error, sizeof last_error, format, args);
    va_end(args);
    for (char *c = last_error; *c; c++) {
        if (*c == '\n' || *c == '\r' || *c == '\t')
            *c = ' ';
    }
    return code;
}

const char *isd_last_error(void)
{
    return last_error;
}
