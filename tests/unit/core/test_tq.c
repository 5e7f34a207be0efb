/* test_tq.c -- timeout queues and the timer heap (src/core/tq.c, src/core/timer.c) on a real loop: FIFO expiry,
 * re-entry at the tail, removal, chained queues; timers firing in deadline order, disarmed ones never */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/tq.h"
#include "core/timer.h"
#include "core/loop.h"

#include <time.h>

/* An owner of a queue entry and a timer, recording when and in what order it fired. */
typedef struct item {
    tt_tq_entry_t entry;
    tt_timer_t timer;
    int id;
    int fired;            /* times its callback ran */
    uint64_t fired_at;    /* tt_loop_now() in the callback */
    uint64_t fired_since; /* queue entry: its since_ms when it expired */
    tt_tq_t *next_q;      /* when set, the queue callback pushes the entry there */
    int rearm;            /* timer: re-arm itself this many more times */
    uint64_t rearm_ms;
} item_t;

static tt_loop_t *g_loop;
static int g_order[256];
static size_t g_norder;

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void record(item_t *it)
{
    it->fired++;
    it->fired_at = tt_loop_now(g_loop);
    assert_true(g_norder < TT_ARRAY_SIZE(g_order));
    g_order[g_norder++] = it->id;
}

static void on_expire(tt_tq_entry_t *e)
{
    item_t *it = tt_container_of(e, item_t, entry);
    assert_null(e->q); /* already removed from its queue */
    it->fired_since = e->since_ms;
    record(it);
    if (it->next_q != NULL) {
        tt_tq_t *q = it->next_q;
        it->next_q = NULL;
        tt_tq_push(q, e);
    }
}

static void on_timer(tt_timer_t *t)
{
    item_t *it = tt_container_of(t, item_t, timer);
    assert_false(tt_timer_is_armed(t)); /* disarmed before the call */
    assert_true(tt_loop_now(g_loop) >= t->at_ms);
    record(it);
    if (it->rearm > 0) {
        it->rearm--;
        tt_timer_arm(g_loop, t, it->rearm_ms);
    }
}

/* Runs loop turns until `g_norder` reaches `n` or `max_ms` of wall time pass. The tests give generous `max_ms`
 * (it ends as soon as `n` fired): a busy machine may not run this process for a while. */
static void run_until(size_t n, uint64_t max_ms)
{
    uint64_t start = wall_ms();
    while (g_norder < n && wall_ms() - start < max_ms) tt_loop_run_once(g_loop, 5);
}

/* Runs loop turns for `ms` of wall time. */
static void run_for(uint64_t ms)
{
    uint64_t start = wall_ms();
    while (wall_ms() - start < ms) tt_loop_run_once(g_loop, 2);
}

static int setup(void **state)
{
    (void)state;
    g_loop = tt_loop_new();
    g_norder = 0;
    return g_loop ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tt_loop_free(&g_loop);
    assert_null(g_loop);
    return 0;
}

static void init_items(item_t *items, size_t n)
{
    memset(items, 0, n * sizeof(*items));
    for (size_t i = 0; i < n; i++) {
        items[i].id = (int)i;
        tt_tq_entry_init(&items[i].entry);
        tt_timer_init(&items[i].timer, on_timer);
    }
}

/* ---- timeout queues ---- */

static void expires_entries_in_fifo_order(void **state)
{
    (void)state;
    tt_tq_t q;
    item_t it[5];
    init_items(it, 5);
    tt_tq_init(&q, g_loop, 50, on_expire);
    for (int i = 0; i < 5; i++) {
        tt_loop_update_clock(g_loop);
        tt_tq_push(&q, &it[i].entry);
        assert_ptr_equal(it[i].entry.q, &q);
        assert_int_equal(it[i].entry.since_ms, tt_loop_now(g_loop));
        assert_int_equal(tt_tq_deadline(&it[i].entry), it[i].entry.since_ms + 50);
        run_for(2);
    }
    /* About 10 ms have passed, not the first one's 50: nothing fired. (Unless this process was not run for
     * 40 ms on a busy machine; then the checks below still hold each entry to its own deadline.) */
    tt_loop_update_clock(g_loop);
    if (tt_loop_now(g_loop) < it[0].entry.since_ms + 50) assert_int_equal(g_norder, 0);
    run_until(5, 5000);
    assert_int_equal(g_norder, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(g_order[i], i);
        assert_int_equal(it[i].fired, 1);
        assert_true(it[i].fired_at >= it[i].fired_since + 50);
        if (i > 0) assert_true(it[i].fired_since >= it[i - 1].fired_since + 2);
        assert_null(it[i].entry.q);
    }
    assert_null(tt_tq_oldest(&q));
    tt_tq_dispose(&q);
}

static void moves_a_repushed_entry_to_the_tail_with_a_new_deadline(void **state)
{
    (void)state;
    tt_tq_t q;
    item_t it[3];
    init_items(it, 3);
    tt_tq_init(&q, g_loop, 40, on_expire);
    tt_loop_update_clock(g_loop);
    tt_tq_push(&q, &it[0].entry);
    tt_tq_push(&q, &it[1].entry);
    tt_tq_push(&q, &it[2].entry);
    uint64_t first = it[0].entry.since_ms;
    run_for(20);
    tt_loop_update_clock(g_loop);
    tt_tq_push(&q, &it[0].entry); /* activity: back to the tail */
    assert_true(it[0].entry.since_ms >= first + 20);
    assert_int_equal(tt_tq_deadline(&it[0].entry), it[0].entry.since_ms + 40);
    assert_ptr_equal(tt_tq_oldest(&q), &it[1].entry);
    run_until(2, 5000);
    if (g_norder == 2) { /* (all three fire in one turn when this process ran late: the order still holds) */
        assert_int_equal(it[0].fired, 0); /* its new deadline is later */
        assert_ptr_equal(tt_tq_oldest(&q), &it[0].entry);
    }
    run_until(3, 5000);
    assert_int_equal(g_norder, 3);
    assert_int_equal(g_order[0], 1);
    assert_int_equal(g_order[1], 2);
    assert_int_equal(g_order[2], 0);
    assert_true(it[1].fired_at >= first + 40);
    assert_true(it[0].fired_at >= it[0].fired_since + 40);
    assert_true(it[0].fired_at >= first + 60);
    tt_tq_dispose(&q);
}

static void never_fires_removed_entries(void **state)
{
    (void)state;
    tt_tq_t q;
    item_t it[4];
    init_items(it, 4);
    tt_tq_init(&q, g_loop, 10, on_expire);
    tt_loop_update_clock(g_loop);
    for (int i = 0; i < 4; i++) tt_tq_push(&q, &it[i].entry);
    tt_tq_remove(&it[1].entry);
    tt_tq_remove(&it[3].entry);
    assert_null(it[1].entry.q);
    tt_tq_remove(&it[1].entry); /* a no-op when in no queue */
    assert_null(it[1].entry.q);
    run_until(2, 5000);
    run_for(30);
    assert_int_equal(g_norder, 2);
    assert_int_equal(g_order[0], 0);
    assert_int_equal(g_order[1], 2);
    assert_int_equal(it[1].fired, 0);
    assert_int_equal(it[3].fired, 0);

    /* the head removed while the timer is armed for it: the rest still fire */
    tt_loop_update_clock(g_loop);
    tt_tq_push(&q, &it[1].entry);
    tt_tq_push(&q, &it[3].entry);
    tt_tq_remove(&it[1].entry);
    run_until(3, 5000);
    assert_int_equal(g_norder, 3);
    assert_int_equal(g_order[2], 3);
    assert_int_equal(it[1].fired, 0);

    /* every entry removed: the timer fires into an empty queue and nothing happens */
    tt_loop_update_clock(g_loop);
    tt_tq_push(&q, &it[0].entry);
    tt_tq_remove(&it[0].entry);
    run_for(30);
    assert_int_equal(g_norder, 3);
    tt_tq_dispose(&q);
}

static void reports_the_oldest_entry(void **state)
{
    (void)state;
    tt_tq_t q;
    item_t it[3];
    init_items(it, 3);
    tt_tq_init(&q, g_loop, 1000, on_expire);
    assert_null(tt_tq_oldest(&q));
    tt_tq_push(&q, &it[0].entry);
    assert_ptr_equal(tt_tq_oldest(&q), &it[0].entry);
    tt_tq_push(&q, &it[1].entry);
    tt_tq_push(&q, &it[2].entry);
    assert_ptr_equal(tt_tq_oldest(&q), &it[0].entry);
    tt_tq_push(&q, &it[0].entry);
    assert_ptr_equal(tt_tq_oldest(&q), &it[1].entry);
    tt_tq_remove(&it[1].entry);
    assert_ptr_equal(tt_tq_oldest(&q), &it[2].entry);
    tt_tq_remove(&it[2].entry);
    assert_ptr_equal(tt_tq_oldest(&q), &it[0].entry);
    tt_tq_remove(&it[0].entry);
    assert_null(tt_tq_oldest(&q));
    tt_tq_dispose(&q);
    run_for(5);
    assert_int_equal(g_norder, 0);
}

static void moves_an_entry_between_queues(void **state)
{
    (void)state;
    tt_tq_t a, b;
    item_t it[2];
    init_items(it, 2);
    tt_tq_init(&a, g_loop, 1000, on_expire);
    tt_tq_init(&b, g_loop, 10, on_expire);
    tt_loop_update_clock(g_loop);
    tt_tq_push(&a, &it[0].entry);
    tt_tq_push(&a, &it[1].entry);
    tt_tq_push(&b, &it[0].entry); /* leaves a */
    assert_ptr_equal(it[0].entry.q, &b);
    assert_ptr_equal(tt_tq_oldest(&a), &it[1].entry);
    assert_ptr_equal(tt_tq_oldest(&b), &it[0].entry);
    run_until(1, 5000);
    assert_int_equal(g_norder, 1);
    assert_int_equal(g_order[0], 0);
    tt_tq_remove(&it[1].entry);
    tt_tq_dispose(&a);
    tt_tq_dispose(&b);
}

static void lets_a_callback_push_into_another_queue(void **state)
{
    (void)state;
    tt_tq_t first, second;
    item_t it[2];
    init_items(it, 2);
    tt_tq_init(&first, g_loop, 10, on_expire);
    tt_tq_init(&second, g_loop, 20, on_expire);
    it[0].next_q = &second;
    it[1].next_q = &second;
    tt_loop_update_clock(g_loop);
    uint64_t t0 = tt_loop_now(g_loop);
    tt_tq_push(&first, &it[0].entry);
    tt_tq_push(&first, &it[1].entry);
    run_until(2, 5000);
    assert_int_equal(g_norder, 2);
    assert_int_equal(g_order[0], 0);
    assert_int_equal(g_order[1], 1);
    assert_ptr_equal(it[0].entry.q, &second);
    assert_ptr_equal(it[1].entry.q, &second);
    assert_true(it[0].fired_at >= t0 + 10);
    uint64_t first_fire = it[0].fired_at;
    run_until(4, 5000);
    assert_int_equal(g_norder, 4);
    assert_int_equal(g_order[2], 0);
    assert_int_equal(g_order[3], 1);
    assert_int_equal(it[0].fired, 2);
    assert_true(it[0].fired_at >= first_fire + 20);
    assert_null(tt_tq_oldest(&first));
    assert_null(tt_tq_oldest(&second));
    tt_tq_dispose(&first);
    tt_tq_dispose(&second);
}

/* ---- timers ---- */

static void fires_timers_in_deadline_order(void **state)
{
    (void)state;
    enum { N = 40 };
    item_t it[N];
    init_items(it, N);
    tt_loop_update_clock(g_loop);
    /* deadlines 1..40 ms in a scrambled arming order; 17 is coprime with 40 */
    for (int k = 0; k < N; k++) {
        int i = (k * 17) % N;
        tt_timer_arm(g_loop, &it[i].timer, (uint64_t)(i + 1));
        assert_true(tt_timer_is_armed(&it[i].timer));
        assert_int_equal(it[i].timer.at_ms, tt_loop_now(g_loop) + (uint64_t)(i + 1));
    }
    run_until(N, 5000);
    assert_int_equal(g_norder, N);
    for (int k = 1; k < N; k++) assert_true(it[g_order[k]].timer.at_ms >= it[g_order[k - 1]].timer.at_ms);
    for (int i = 0; i < N; i++) {
        assert_int_equal(it[i].fired, 1);
        assert_int_equal(g_order[i], i); /* distinct deadlines: exactly this order */
    }
}

static void never_fires_disarmed_timers(void **state)
{
    (void)state;
    enum { N = 30 };
    item_t it[N];
    init_items(it, N);
    tt_loop_update_clock(g_loop);
    for (int i = 0; i < N; i++) tt_timer_arm(g_loop, &it[i].timer, (uint64_t)(5 + i % 10));
    for (int i = 0; i < N; i += 3) {
        tt_timer_disarm(g_loop, &it[i].timer);
        assert_false(tt_timer_is_armed(&it[i].timer));
        tt_timer_disarm(g_loop, &it[i].timer); /* a no-op when not armed */
    }
    run_until(N - 10, 5000);
    run_for(20);
    assert_int_equal(g_norder, N - 10);
    for (int i = 0; i < N; i++) assert_int_equal(it[i].fired, i % 3 == 0 ? 0 : 1);
    for (size_t k = 1; k < g_norder; k++) assert_true(it[g_order[k]].timer.at_ms >= it[g_order[k - 1]].timer.at_ms);
}

static void rearms_a_timer_to_a_new_deadline(void **state)
{
    (void)state;
    item_t it[3];
    init_items(it, 3);
    tt_loop_update_clock(g_loop);
    tt_timer_arm(g_loop, &it[0].timer, 10);
    tt_timer_arm(g_loop, &it[1].timer, 20);
    tt_timer_arm(g_loop, &it[2].timer, 30);
    tt_timer_arm(g_loop, &it[0].timer, 40); /* later */
    tt_timer_arm(g_loop, &it[2].timer, 5);  /* earlier */
    run_until(3, 5000);
    assert_int_equal(g_norder, 3);
    assert_int_equal(g_order[0], 2);
    assert_int_equal(g_order[1], 1);
    assert_int_equal(g_order[2], 0);
    assert_int_equal(it[0].fired, 1);

    /* a callback may re-arm its own timer */
    g_norder = 0;
    it[1].rearm = 3;
    it[1].rearm_ms = 5;
    tt_timer_arm(g_loop, &it[1].timer, 5);
    run_until(4, 5000);
    assert_int_equal(g_norder, 4);
    assert_int_equal(it[1].fired, 1 + 4);
    assert_false(tt_timer_is_armed(&it[1].timer));
}

static void disarms_any_timer_of_a_large_heap(void **state)
{
    (void)state;
    enum { N = 200 }; /* beyond the initial heap capacity */
    static item_t it[N];
    init_items(it, N);
    tt_loop_update_clock(g_loop);
    for (int i = 0; i < N; i++) tt_timer_arm(g_loop, &it[i].timer, (uint64_t)(10 + (i * 7) % 31));
    for (int i = 0; i < N; i += 2) tt_timer_disarm(g_loop, &it[i].timer);
    run_until(N / 2, 5000);
    run_for(10);
    assert_int_equal(g_norder, N / 2);
    for (int i = 0; i < N; i++) assert_int_equal(it[i].fired, i % 2);
    for (size_t k = 1; k < g_norder; k++) assert_true(it[g_order[k]].timer.at_ms >= it[g_order[k - 1]].timer.at_ms);
}

/* tt_tq_push_head (issue 9): the pool takes its oldest waiter out to serve it and, finding no room, puts it
 * back. It keeps its place and its deadline, and the queue's timer fires for it, not for the later tail. The
 * loop's clock is manual, so "later" is exact. */
static void puts_an_entry_back_at_the_head_with_its_deadline(void **state)
{
    (void)state;
    tt_loop_set_clock(g_loop, tt_loop_now(g_loop), 0);
    uint64_t t0 = tt_loop_now(g_loop);
    tt_tq_t q;
    tt_tq_init(&q, g_loop, 100, on_expire);
    item_t items[3];
    init_items(items, 3);
    tt_tq_push(&q, &items[0].entry);
    tt_loop_set_clock(g_loop, t0 + 10, 0);
    tt_tq_push(&q, &items[1].entry);
    tt_loop_set_clock(g_loop, t0 + 20, 0);
    tt_tq_push(&q, &items[2].entry);
    /* taken out (the pool unlinks before serving), then back at the head as of t0 */
    tt_tq_remove(&items[0].entry);
    tt_loop_set_clock(g_loop, t0 + 50, 0);
    tt_tq_push_head(&q, &items[0].entry, t0);
    assert_ptr_equal(tt_tq_oldest(&q), &items[0].entry);
    assert_int_equal(tt_tq_deadline(&items[0].entry), t0 + 100);
    /* the same with the queue's timer already run: the last entry alone, and the head put back before it */
    tt_loop_set_clock(g_loop, t0 + 100, 0);
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(g_norder, 1);
    assert_int_equal(g_order[0], 0);
    assert_int_equal(items[0].fired_since, t0);
    tt_loop_set_clock(g_loop, t0 + 110, 0);
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(g_norder, 2);
    assert_int_equal(g_order[1], 1);
    /* items[2] leaves; the timer armed for it (t0 + 120) fires into an empty queue */
    tt_tq_remove(&items[2].entry);
    tt_loop_set_clock(g_loop, t0 + 120, 0);
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(g_norder, 2);
    /* it comes back (deadline t0 + 220, the timer armed for that), is taken out and put back at the head as
     * of t0 + 30: the timer must move in to t0 + 130 */
    tt_tq_push(&q, &items[2].entry);
    tt_tq_remove(&items[2].entry);
    tt_tq_push_head(&q, &items[2].entry, t0 + 30);
    tt_loop_set_clock(g_loop, t0 + 130, 0);
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(g_norder, 3);
    assert_int_equal(g_order[2], 2);
    assert_int_equal(items[2].fired_at, t0 + 130);
    tt_tq_dispose(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(expires_entries_in_fifo_order, setup, teardown),
        cmocka_unit_test_setup_teardown(moves_a_repushed_entry_to_the_tail_with_a_new_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(never_fires_removed_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(reports_the_oldest_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(moves_an_entry_between_queues, setup, teardown),
        cmocka_unit_test_setup_teardown(lets_a_callback_push_into_another_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(fires_timers_in_deadline_order, setup, teardown),
        cmocka_unit_test_setup_teardown(never_fires_disarmed_timers, setup, teardown),
        cmocka_unit_test_setup_teardown(rearms_a_timer_to_a_new_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(disarms_any_timer_of_a_large_heap, setup, teardown),
        cmocka_unit_test_setup_teardown(puts_an_entry_back_at_the_head_with_its_deadline, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
