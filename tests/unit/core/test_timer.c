/* test_timer.c -- the timer heap (src/core/timer.c): heap order under any sequence of arm, disarm and re-arm
 * checked against a reference model, equal deadlines, the "armed from a timer fires next turn" rule, callbacks
 * that touch other timers, and the poll bound tt__timer_wait_ms */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/* White-box: the heap layout and tt__timer_wait_ms are only reachable through the loop's private header. */
#include "core/loop_int.h"
#include "core/timer.h"
#include "core/loop.h"

#include <time.h>
#include <unistd.h>

/* An owner of a timer, recording how often and when it fired. */
typedef struct item {
    tt_timer_t timer;
    int id;
    int fired;
    uint64_t fired_now;   /* tt_loop_now() in the callback */
    uint64_t fired_at_ms; /* its deadline when it fired */
    int rearm_now;        /* re-arm itself for "now" this many more times */
    struct item *disarm;  /* disarm this one from the callback */
    struct item *arm;     /* arm this one from the callback ... */
    uint64_t arm_at;      /* ... for this absolute deadline */
    bool stop_loop;       /* call tt_loop_stop() from the callback */
} item_t;

static tt_loop_t *g_loop;
static int g_order[1024];
static size_t g_norder;

static int setup(void **state)
{
    (void)state;
    g_loop = tt_loop_new();
    g_norder = 0;
    alarm(60); /* a turn that blocks for ever fails the test instead of hanging it */
    return g_loop ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    alarm(0);
    tt_loop_free(&g_loop);
    return 0;
}

/* Every slot points back at itself and no child is earlier than its parent. */
static void assert_heap_valid(const tt_loop_t *loop)
{
    assert_true(loop->heap_len <= loop->heap_cap);
    for (uint32_t i = 0; i < loop->heap_len; i++) {
        assert_int_equal(loop->heap[i]->_heap_idx, i + 1);
        if (i > 0) assert_true(loop->heap[(i - 1) / 2]->at_ms <= loop->heap[i]->at_ms);
    }
}

static void on_timer(tt_timer_t *t)
{
    item_t *it = tt_container_of(t, item_t, timer);
    assert_false(tt_timer_is_armed(t)); /* disarmed before the call */
    assert_true(g_loop->in_timers);
    assert_heap_valid(g_loop);
    it->fired++;
    it->fired_now = tt_loop_now(g_loop);
    it->fired_at_ms = t->at_ms;
    assert_true(g_norder < TT_ARRAY_SIZE(g_order));
    g_order[g_norder++] = it->id;
    if (it->disarm != NULL) tt_timer_disarm(g_loop, &it->disarm->timer);
    if (it->arm != NULL) tt_timer_arm_at(g_loop, &it->arm->timer, it->arm_at);
    if (it->stop_loop) tt_loop_stop(g_loop);
    if (it->rearm_now > 0) {
        it->rearm_now--;
        tt_timer_arm(g_loop, t, 0);
    }
}

static void init_items(item_t *items, size_t n)
{
    memset(items, 0, n * sizeof(*items));
    for (size_t i = 0; i < n; i++) {
        items[i].id = (int)i;
        tt_timer_init(&items[i].timer, on_timer);
    }
}

/* xorshift64: a fixed seed makes every run the same sequence. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Timer deadlines "in the past" relative to the cached now expire in the next turn whatever the machine's load;
 * "far" ones (an hour or more) never do during a test. */
#define PAST(k) (tt_loop_now(g_loop) - 1000u + (uint64_t)(k))
#define FAR(k)  (tt_loop_now(g_loop) + 3600000u + (uint64_t)(k))

static void keeps_the_heap_ordered_through_random_arms_disarms_and_rearms(void **state)
{
    (void)state;
    enum { N = 300, ROUNDS = 8, OPS = 2000 }; /* N is beyond the initial heap capacity of 64 */
    static item_t it[N];
    static bool armed[N];     /* the reference model: which timers are armed ... */
    static uint64_t model[N]; /* ... and for when */
    init_items(it, N);
    memset(armed, 0, sizeof(armed));
    uint64_t seed = 0x7e7e5eedULL;
    for (int round = 0; round < ROUNDS; round++) {
        for (int op = 0; op < OPS; op++) {
            size_t i = rnd(&seed) % N;
            uint64_t r = rnd(&seed);
            if (r % 4 == 0) {
                tt_timer_disarm(g_loop, &it[i].timer); /* also on unarmed ones */
                armed[i] = false;
            } else {
                /* a narrow range makes many deadlines equal; about half of them are due at the next turn */
                uint64_t k = (r >> 8) % 64;
                uint64_t at = (r >> 16) % 2 ? PAST(k) : FAR(k);
                tt_timer_arm_at(g_loop, &it[i].timer, at);
                armed[i] = true;
                model[i] = at;
            }
            assert_heap_valid(g_loop);
            uint32_t n_armed = 0;
            for (size_t j = 0; j < N; j++) {
                assert_int_equal(tt_timer_is_armed(&it[j].timer), armed[j]);
                if (armed[j]) {
                    n_armed++;
                    assert_int_equal(it[j].timer.at_ms, model[j]);
                }
            }
            assert_int_equal(g_loop->heap_len, n_armed);
        }
        /* One turn fires exactly the due timers, each once, earliest deadline first; the rest stay armed. */
        uint64_t now = tt_loop_now(g_loop);
        int before[N];
        for (size_t j = 0; j < N; j++) before[j] = it[j].fired;
        g_norder = 0;
        tt_loop_run_once(g_loop, 0);
        assert_heap_valid(g_loop);
        size_t due = 0;
        for (size_t j = 0; j < N; j++) {
            bool is_due = armed[j] && model[j] <= now;
            due += is_due;
            assert_int_equal(it[j].fired - before[j], is_due ? 1 : 0);
            if (is_due) armed[j] = false;
            assert_int_equal(tt_timer_is_armed(&it[j].timer), armed[j]);
        }
        assert_int_equal(g_norder, due);
        assert_true(due > 0);
        for (size_t k = 1; k < g_norder; k++) assert_true(it[g_order[k - 1]].fired_at_ms <= it[g_order[k]].fired_at_ms);
    }
    for (size_t j = 0; j < N; j++) tt_timer_disarm(g_loop, &it[j].timer);
    assert_int_equal(g_loop->heap_len, 0);
}

static void treats_disarming_an_unarmed_timer_as_a_no_op(void **state)
{
    (void)state;
    item_t it[4];
    init_items(it, 4);
    tt_timer_disarm(g_loop, &it[0].timer); /* never armed, heap empty */
    assert_int_equal(g_loop->heap_len, 0);
    assert_false(tt_timer_is_armed(&it[0].timer));

    tt_timer_arm_at(g_loop, &it[1].timer, PAST(2));
    tt_timer_arm_at(g_loop, &it[2].timer, PAST(1));
    tt_timer_arm_at(g_loop, &it[3].timer, FAR(0));
    tt_timer_disarm(g_loop, &it[0].timer); /* never armed, heap not empty */
    assert_int_equal(g_loop->heap_len, 3);
    tt_timer_disarm(g_loop, &it[2].timer);
    tt_timer_disarm(g_loop, &it[2].timer); /* disarmed twice */
    assert_int_equal(g_loop->heap_len, 2);
    assert_heap_valid(g_loop);

    tt_loop_run_once(g_loop, 0);
    assert_int_equal(it[1].fired, 1);
    assert_int_equal(it[2].fired, 0);
    tt_timer_disarm(g_loop, &it[1].timer); /* disarmed by firing already */
    assert_int_equal(g_loop->heap_len, 1);
    assert_ptr_equal(g_loop->heap[0], &it[3].timer);
    assert_true(tt_timer_is_armed(&it[3].timer));
    tt_timer_disarm(g_loop, &it[3].timer);
}

static void moves_a_rearmed_timer_earlier_or_later_without_a_second_slot(void **state)
{
    (void)state;
    enum { N = 10 };
    item_t it[N];
    init_items(it, N);
    for (int i = 0; i < N; i++) tt_timer_arm_at(g_loop, &it[i].timer, FAR(10 * i));
    assert_ptr_equal(g_loop->heap[0], &it[0].timer);

    tt_timer_arm_at(g_loop, &it[7].timer, FAR(0) - 1); /* earlier than every other: the new root */
    assert_ptr_equal(g_loop->heap[0], &it[7].timer);
    assert_int_equal(g_loop->heap_len, N);
    assert_heap_valid(g_loop);

    tt_timer_arm_at(g_loop, &it[7].timer, FAR(1000)); /* later than every other: the root is it[0] again */
    assert_ptr_equal(g_loop->heap[0], &it[0].timer);
    assert_int_equal(it[7].timer.at_ms, FAR(1000));
    assert_int_equal(g_loop->heap_len, N);
    assert_heap_valid(g_loop);

    tt_timer_arm_at(g_loop, &it[0].timer, FAR(55)); /* the root moves to the middle */
    assert_ptr_equal(g_loop->heap[0], &it[1].timer);
    tt_timer_arm_at(g_loop, &it[3].timer, it[3].timer.at_ms); /* the same deadline again */
    assert_int_equal(g_loop->heap_len, N);
    assert_heap_valid(g_loop);

    /* Moved into the past, in the order 9, 4, 2: that is the firing order; the others stay. */
    tt_timer_arm_at(g_loop, &it[9].timer, PAST(0));
    tt_timer_arm_at(g_loop, &it[4].timer, PAST(5));
    tt_timer_arm_at(g_loop, &it[2].timer, PAST(9));
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(g_norder, 3);
    assert_int_equal(g_order[0], 9);
    assert_int_equal(g_order[1], 4);
    assert_int_equal(g_order[2], 2);
    assert_int_equal(g_loop->heap_len, N - 3);
    assert_heap_valid(g_loop);
    for (int i = 0; i < N; i++) tt_timer_disarm(g_loop, &it[i].timer);
}

static void fires_every_one_of_many_timers_with_equal_deadlines_once(void **state)
{
    (void)state;
    enum { N = 150 };
    static item_t it[N];
    init_items(it, N);
    uint64_t at = PAST(0);
    for (int i = 0; i < N; i++) tt_timer_arm_at(g_loop, &it[i].timer, at);
    for (int i = 0; i < N; i += 5) tt_timer_disarm(g_loop, &it[i].timer); /* holes among equals */
    assert_heap_valid(g_loop);
    tt_timer_arm_at(g_loop, &it[0].timer, at); /* and one back in */
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(g_norder, N - N / 5 + 1);
    for (int i = 0; i < N; i++) assert_int_equal(it[i].fired, i == 0 || i % 5 != 0 ? 1 : 0);
    assert_int_equal(g_loop->heap_len, 0);
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(g_norder, N - N / 5 + 1);
}

static void fires_a_timer_that_rearms_itself_for_now_on_a_later_turn(void **state)
{
    (void)state;
    item_t it[1];
    init_items(it, 1);
    it[0].rearm_now = 3;
    tt_timer_arm_at(g_loop, &it[0].timer, PAST(0));
    /* Each turn fires it at most once: re-armed for now inside the expiry it moves one ms past that turn's now. */
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(it[0].fired, 1);
    assert_false(g_loop->in_timers);
    assert_true(tt_timer_is_armed(&it[0].timer));
    assert_int_equal(it[0].timer.at_ms, it[0].fired_now + 1);
    uint64_t start = wall_ms();
    int turns = 0;
    while (it[0].fired < 4 && wall_ms() - start < 5000) {
        int before = it[0].fired;
        tt_loop_run_once(g_loop, 20);
        assert_true(it[0].fired - before <= 1);
        turns++;
    }
    assert_int_equal(it[0].fired, 4);
    assert_true(turns >= 3);
    assert_false(tt_timer_is_armed(&it[0].timer));
}

static void keeps_a_past_deadline_armed_outside_the_timer_callbacks(void **state)
{
    (void)state;
    item_t it[1];
    init_items(it, 1);
    uint64_t now = tt_loop_now(g_loop);
    tt_timer_arm_at(g_loop, &it[0].timer, now - 5); /* the one-ms push applies inside the expiry only */
    assert_int_equal(it[0].timer.at_ms, now - 5);
    tt_timer_arm_at(g_loop, &it[0].timer, now);
    assert_int_equal(it[0].timer.at_ms, now);
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(it[0].fired, 1);
}

static void arms_relative_to_the_cached_now(void **state)
{
    (void)state;
    item_t it[2];
    init_items(it, 2);
    uint64_t now = tt_loop_now(g_loop);
    usleep(3000); /* time passes, the cached now does not */
    tt_timer_arm(g_loop, &it[0].timer, 25);
    assert_int_equal(it[0].timer.at_ms, now + 25);
    tt_timer_arm(g_loop, &it[1].timer, 0);
    assert_int_equal(it[1].timer.at_ms, now);
    tt_loop_update_clock(g_loop);
    assert_true(tt_loop_now(g_loop) >= now + 3);
    tt_timer_arm(g_loop, &it[1].timer, 0);
    assert_int_equal(it[1].timer.at_ms, tt_loop_now(g_loop));
    tt_timer_disarm(g_loop, &it[0].timer);
    tt_timer_disarm(g_loop, &it[1].timer);
}

static void lets_a_callback_disarm_and_arm_other_timers(void **state)
{
    (void)state;
    enum { A, B, C, D, E, F, N };
    item_t it[N];
    init_items(it, N);
    tt_timer_arm_at(g_loop, &it[A].timer, PAST(0));
    tt_timer_arm_at(g_loop, &it[B].timer, PAST(1));
    tt_timer_arm_at(g_loop, &it[C].timer, PAST(2));
    tt_timer_arm_at(g_loop, &it[D].timer, PAST(3));
    it[A].disarm = &it[C]; /* due this turn, but disarmed first: never fires */
    it[A].arm = &it[E];    /* armed for the past from a callback: the next turn, not this one */
    it[A].arm_at = PAST(0);
    it[B].disarm = &it[F]; /* not armed: a no-op */
    it[B].arm = &it[D];    /* due this turn, moved an hour out */
    it[B].arm_at = FAR(0);
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(g_norder, 2);
    assert_int_equal(g_order[0], A);
    assert_int_equal(g_order[1], B);
    assert_false(tt_timer_is_armed(&it[C].timer));
    assert_true(tt_timer_is_armed(&it[D].timer));
    assert_true(tt_timer_is_armed(&it[E].timer));
    assert_int_equal(it[E].timer.at_ms, it[A].fired_now + 1);
    assert_heap_valid(g_loop);

    uint64_t start = wall_ms();
    while (it[E].fired == 0 && wall_ms() - start < 5000) tt_loop_run_once(g_loop, 20);
    assert_int_equal(it[E].fired, 1);
    assert_int_equal(it[C].fired, 0);
    assert_int_equal(it[D].fired, 0);
    assert_int_equal(g_loop->heap_len, 1);
    tt_timer_disarm(g_loop, &it[D].timer);
}

static void bounds_the_poll_wait_by_the_earliest_deadline(void **state)
{
    (void)state;
    item_t it[3];
    init_items(it, 3);
    uint64_t now = tt_loop_now(g_loop); /* no turn runs below: now stays put */
    assert_int_equal(tt__timer_wait_ms(g_loop), -1);
    tt_timer_arm_at(g_loop, &it[0].timer, now + 25);
    assert_int_equal(tt__timer_wait_ms(g_loop), 25);
    tt_timer_arm_at(g_loop, &it[1].timer, now + 7);
    assert_int_equal(tt__timer_wait_ms(g_loop), 7);
    tt_timer_arm_at(g_loop, &it[1].timer, now);
    assert_int_equal(tt__timer_wait_ms(g_loop), 0);
    tt_timer_arm_at(g_loop, &it[1].timer, now - 500);
    assert_int_equal(tt__timer_wait_ms(g_loop), 0);
    tt_timer_disarm(g_loop, &it[1].timer);
    assert_int_equal(tt__timer_wait_ms(g_loop), 25);
    tt_timer_arm_at(g_loop, &it[0].timer, now + 3600000u + 1); /* capped at an hour */
    assert_int_equal(tt__timer_wait_ms(g_loop), 3600000);
    tt_timer_arm_at(g_loop, &it[0].timer, UINT64_MAX);
    assert_int_equal(tt__timer_wait_ms(g_loop), 3600000);
    tt_timer_arm_at(g_loop, &it[2].timer, now + 1);
    assert_int_equal(tt__timer_wait_ms(g_loop), 1);
    tt_timer_disarm(g_loop, &it[2].timer);
    tt_timer_disarm(g_loop, &it[0].timer);
    assert_int_equal(tt__timer_wait_ms(g_loop), -1);
}

static void wakes_up_for_the_next_deadline_when_waiting_without_a_bound(void **state)
{
    (void)state;
    item_t it[1];
    init_items(it, 1);
    it[0].stop_loop = true; /* else the firing turn, with nothing left armed, would then wait for ever */
    tt_timer_arm(g_loop, &it[0].timer, 30);
    /* -1 waits until the next timer; a loaded machine may take longer, but a few turns must do it */
    int turns = 0;
    while (turns < 50 && it[0].fired == 0) {
        tt_loop_run_once(g_loop, -1);
        turns++;
    }
    assert_int_equal(it[0].fired, 1);
    assert_true(turns <= 5);
    assert_true(it[0].fired_now >= it[0].fired_at_ms);
    assert_int_equal(tt__timer_wait_ms(g_loop), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(keeps_the_heap_ordered_through_random_arms_disarms_and_rearms, setup, teardown),
        cmocka_unit_test_setup_teardown(treats_disarming_an_unarmed_timer_as_a_no_op, setup, teardown),
        cmocka_unit_test_setup_teardown(moves_a_rearmed_timer_earlier_or_later_without_a_second_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(fires_every_one_of_many_timers_with_equal_deadlines_once, setup, teardown),
        cmocka_unit_test_setup_teardown(fires_a_timer_that_rearms_itself_for_now_on_a_later_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(keeps_a_past_deadline_armed_outside_the_timer_callbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(arms_relative_to_the_cached_now, setup, teardown),
        cmocka_unit_test_setup_teardown(lets_a_callback_disarm_and_arm_other_timers, setup, teardown),
        cmocka_unit_test_setup_teardown(bounds_the_poll_wait_by_the_earliest_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(wakes_up_for_the_next_deadline_when_waiting_without_a_bound, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
