/* test_reqbuf.c -- a proxied request's buffered content (src/handlers/reqbuf.c): memory up to the limit, then an
 * unlinked temporary file holding everything, read back whole from any offset, closed by free */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "handlers/reqbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

static tt_bufpool_t bufs;

/* Reads all of `b` from `off` in pieces of `piece` bytes into `out`; returns the bytes read. */
static size_t read_all(tt_reqbuf_t *b, uint64_t off, size_t piece, char *out)
{
    char scratch[4096];
    size_t got = 0;
    for (;;) {
        const char *p = NULL;
        int64_t n = tt_reqbuf_read(b, off + got, scratch, piece < sizeof(scratch) ? piece : sizeof(scratch), &p);
        assert_true(n >= 0);
        if (n == 0) return got;
        memcpy(out + got, p, (size_t)n);
        got += (size_t)n;
    }
}

static void stays_in_memory_up_to_the_limit(void **state)
{
    (void)state;
    tt_reqbuf_t b;
    tt_reqbuf_init(&b, 100, NULL);
    assert_int_equal(tt_reqbuf_append(&b, &bufs, "0123456789", 10), 0);
    assert_int_equal(tt_reqbuf_append(&b, &bufs, NULL, 0), 0);
    char big[90];
    memset(big, 'x', sizeof(big));
    assert_int_equal(tt_reqbuf_append(&b, &bufs, big, sizeof(big)), 0); /* exactly the limit: still memory */
    assert_int_equal(b.fd, -1);
    assert_int_equal(b.len, 100);
    char out[200];
    assert_int_equal(read_all(&b, 0, 7, out), 100);
    assert_memory_equal(out, "0123456789", 10);
    assert_int_equal(read_all(&b, 95, 7, out), 5);
    tt_reqbuf_free(&b, &bufs);
    tt_reqbuf_free(&b, &bufs); /* idempotent */
    assert_int_equal(b.len, 0);
}

static void spills_everything_to_an_unlinked_file(void **state)
{
    (void)state;
    tt_reqbuf_t b;
    tt_reqbuf_init(&b, 1000, "/tmp");
    static char data[50000];
    for (size_t i = 0; i < sizeof(data); i++) data[i] = (char)(i * 7 + i / 251);
    assert_int_equal(tt_reqbuf_append(&b, &bufs, data, 600), 0);
    assert_int_equal(tt_reqbuf_append(&b, &bufs, data + 600, 600), 1); /* past 1000: the file, once */
    assert_true(b.fd >= 0);
    assert_int_equal(b.mem.len, 0); /* memory given back */
    assert_int_equal(tt_reqbuf_append(&b, &bufs, data + 1200, sizeof(data) - 1200), 0);
    struct stat st;
    assert_int_equal(fstat(b.fd, &st), 0);
    assert_int_equal(st.st_nlink, 0); /* no name anywhere */
    static char out[sizeof(data)];
    assert_int_equal(read_all(&b, 0, 3000, out), sizeof(data));
    assert_memory_equal(out, data, sizeof(data));
    assert_int_equal(read_all(&b, 40000, 3000, out), sizeof(data) - 40000); /* a replay may start anywhere */
    assert_memory_equal(out, data + 40000, sizeof(data) - 40000);
    int fd = b.fd;
    tt_reqbuf_free(&b, &bufs);
    assert_int_equal(b.fd, -1);
    assert_int_equal(fcntl(fd, F_GETFD), -1); /* closed */
}

static void a_zero_limit_goes_to_a_file_at_once(void **state)
{
    (void)state;
    tt_reqbuf_t b;
    tt_reqbuf_init(&b, 0, NULL);
    assert_int_equal(tt_reqbuf_append(&b, &bufs, "a", 1), 1);
    char out[4];
    assert_int_equal(read_all(&b, 0, 4, out), 1);
    assert_int_equal(out[0], 'a');
    tt_reqbuf_free(&b, &bufs);
}

static void a_missing_directory_is_an_error(void **state)
{
    (void)state;
    tt_reqbuf_t b;
    tt_reqbuf_init(&b, 4, "/nonexistent-tether-dir");
    assert_int_equal(tt_reqbuf_append(&b, &bufs, "abc", 3), 0);
    assert_int_equal(tt_reqbuf_append(&b, &bufs, "defg", 4), -ENOENT);
    assert_int_equal(b.fd, -1);
    tt_reqbuf_free(&b, &bufs);
}

int main(void)
{
    tt_bufpool_init(&bufs, 4096, 4);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stays_in_memory_up_to_the_limit),
        cmocka_unit_test(spills_everything_to_an_unlinked_file),
        cmocka_unit_test(a_zero_limit_goes_to_a_file_at_once),
        cmocka_unit_test(a_missing_directory_is_an_error),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tt_bufpool_dispose(&bufs);
    return rc;
}
