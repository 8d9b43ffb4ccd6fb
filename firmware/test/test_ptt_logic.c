/* Host unit tests of the firmware's portable logic: `make -C firmware test` (gcc), run by `make test`. */
#include <stdio.h>
#include <string.h>

#include "../forge_ptt/ptt_logic.h"

static int failures = 0, checks = 0;
#define CHECK(cond) do { checks++; if (!(cond)) { failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)

static void test_debounce_ignores_chatter_and_reports_each_edge_once(void) {
    ptt_debounce_t d;
    ptt_debounce_init(&d, 50, 0);
    /* contact bounce: on/off every 5 ms for 30 ms, settling open, is not a press */
    for (uint32_t t = 0; t <= 30; t += 5) CHECK(ptt_debounce_update(&d, (t / 5) % 2, t) == PTT_NONE);
    uint32_t t = 100;
    CHECK(ptt_debounce_update(&d, 1, t) == PTT_NONE);
    CHECK(ptt_debounce_update(&d, 1, t + 49) == PTT_NONE);
    CHECK(ptt_debounce_update(&d, 1, t + 50) == PTT_PRESSED);
    CHECK(ptt_debounce_update(&d, 1, t + 200) == PTT_NONE); /* held: no second press */
    CHECK(ptt_debounce_update(&d, 0, t + 300) == PTT_NONE);
    CHECK(ptt_debounce_update(&d, 0, t + 350) == PTT_RELEASED);
    ptt_debounce_init(&d, 5, 0);
    CHECK(d.debounce_ms == 30); /* clamped to 30..80 */
    ptt_debounce_init(&d, 500, 0);
    CHECK(d.debounce_ms == 80);
    /* across the 32-bit millis() wrap */
    ptt_debounce_init(&d, 40, 0xFFFFFFF0u);
    CHECK(ptt_debounce_update(&d, 1, 0xFFFFFFF0u) == PTT_NONE);
    CHECK(ptt_debounce_update(&d, 1, 0x00000020u) == PTT_PRESSED);
}

static void test_ring_keeps_the_newest_samples_for_the_pre_roll(void) {
    int16_t storage[8], out[8], in[20];
    for (int i = 0; i < 20; i++) in[i] = (int16_t)(i + 1);
    ptt_ring_t r;
    ptt_ring_init(&r, storage, 8);
    ptt_ring_push(&r, in, 3);
    CHECK(ptt_ring_last(&r, out, 8) == 3 && out[0] == 1 && out[2] == 3);
    ptt_ring_push(&r, in + 3, 7); /* 10 pushed into 8: the oldest two are gone */
    CHECK(ptt_ring_last(&r, out, 8) == 8 && out[0] == 3 && out[7] == 10);
    CHECK(ptt_ring_last(&r, out, 2) == 2 && out[0] == 9 && out[1] == 10);
    ptt_ring_push(&r, in, 20); /* more than fits at once */
    CHECK(ptt_ring_last(&r, out, 8) == 8 && out[0] == 13 && out[7] == 20);
    CHECK(ptt_samples(250, 16000) == 4000 && ptt_samples(250, 44100) == 11025);
}

static void test_frames_are_little_endian_and_bounded(void) {
    int16_t pcm[3] = {1, -2, 0x1234};
    uint8_t out[64];
    size_t n = ptt_frame_ws(out, sizeof out, 7, 0x01020304u, pcm, 3);
    const uint8_t ws[] = {7, 0, 0, 0, 4, 3, 2, 1, 1, 0, 0xFE, 0xFF, 0x34, 0x12};
    CHECK(n == sizeof ws && memcmp(out, ws, sizeof ws) == 0);
    n = ptt_frame_http(out, sizeof out, 7, 2, pcm, 3);
    const uint8_t http[] = {7, 0, 0, 0, 2, 0, 0, 0, 6, 0, 1, 0, 0xFE, 0xFF, 0x34, 0x12};
    CHECK(n == sizeof http && memcmp(out, http, sizeof http) == 0);
    CHECK(ptt_frame_ws(out, 10, 1, 1, pcm, 3) == 0); /* too small a buffer: nothing written */
    static int16_t big[PTT_MAX_CHUNK_BYTES / 2 + 1];
    static uint8_t room[PTT_MAX_CHUNK_BYTES + 64];
    CHECK(ptt_frame_ws(room, sizeof room, 1, 1, big, PTT_MAX_CHUNK_BYTES / 2) > 0);
    CHECK(ptt_frame_ws(room, sizeof room, 1, 1, big, PTT_MAX_CHUNK_BYTES / 2 + 1) == 0); /* the sidecar's limit */
}

static void test_reply_frames_parse_only_when_whole(void) {
    const uint8_t buf[] = {'A', 4, 0, 0, 0, 1, 2, 3, 4, 'J', 2, 0, 0, 0, '{', '}'};
    char kind; const uint8_t *payload; uint32_t length;
    CHECK(ptt_parse_reply_frame(buf, 8, &kind, &payload, &length) == 0); /* half a frame */
    CHECK(ptt_parse_reply_frame(buf, sizeof buf, &kind, &payload, &length) == 9);
    CHECK(kind == 'A' && length == 4 && payload[0] == 1);
    CHECK(ptt_parse_reply_frame(buf + 9, sizeof buf - 9, &kind, &payload, &length) == 7 && kind == 'J');
    const uint8_t huge[] = {'A', 0xFF, 0xFF, 0xFF, 0xFF};
    CHECK(ptt_parse_reply_frame(huge, sizeof huge, &kind, &payload, &length) == 0);
}

static void test_backoff_grows_with_full_jitter_and_gives_up(void) {
    ptt_backoff_t b;
    ptt_backoff_init(&b, 250, 8000, 6, 42);
    uint32_t delay, ceilings[] = {250, 500, 1000, 2000, 4000, 8000};
    for (int i = 0; i < 6; i++) {
        CHECK(ptt_backoff_next(&b, &delay) == 1);
        CHECK(delay <= ceilings[i]);
    }
    CHECK(ptt_backoff_next(&b, &delay) == 0); /* six tries, then give up and sleep */
    ptt_backoff_reset(&b);
    CHECK(ptt_backoff_next(&b, &delay) == 1);
    /* jitter: two devices with different seeds do not retry in step */
    ptt_backoff_t x, y;
    ptt_backoff_init(&x, 1000, 1000, 50, 1);
    ptt_backoff_init(&y, 1000, 1000, 50, 2);
    int same = 0;
    for (int i = 0; i < 50; i++) {
        uint32_t a, c;
        ptt_backoff_next(&x, &a);
        ptt_backoff_next(&y, &c);
        same += a == c;
    }
    CHECK(same < 5);
}

static void test_context_is_refetched_only_when_stale(void) {
    ptt_context_cache_t c;
    ptt_context_init(&c, 3600);
    CHECK(ptt_context_stale(&c, "\"c1-v3\"", 100) == 1); /* nothing cached */
    ptt_context_store(&c, "\"c1-v3\"", 100);
    CHECK(ptt_context_stale(&c, "\"c1-v3\"", 200) == 0);
    CHECK(ptt_context_stale(&c, "\"c1-v4\"", 200) == 1); /* the heartbeat says it changed */
    CHECK(ptt_context_stale(&c, NULL, 3699) == 0);
    CHECK(ptt_context_stale(&c, NULL, 3700) == 1); /* too old */
    char long_etag[100];
    memset(long_etag, 'x', sizeof long_etag - 1);
    long_etag[99] = '\0';
    ptt_context_store(&c, long_etag, 0);
    CHECK(strlen(c.etag) == sizeof c.etag - 1); /* truncated, terminated */
}

static void test_a_press_records_then_post_rolls_then_uploads(void) {
    ptt_press_t p;
    ptt_press_init(&p, 600);
    CHECK(ptt_press_step(&p, PTT_NONE, 0) == PTT_IDLE);
    CHECK(ptt_press_step(&p, PTT_PRESSED, 10) == PTT_RECORDING && p.turn == 1 && p.seq == 0);
    CHECK(ptt_press_step(&p, PTT_RELEASED, 2000) == PTT_POST_ROLL);
    CHECK(ptt_press_step(&p, PTT_NONE, 2599) == PTT_POST_ROLL);
    CHECK(ptt_press_step(&p, PTT_NONE, 2600) == PTT_UPLOADING);
    ptt_press_uploaded(&p);
    CHECK(p.phase == PTT_IDLE);
    CHECK(ptt_press_step(&p, PTT_PRESSED, 5000) == PTT_RECORDING && p.turn == 2); /* a new turn */
    ptt_press_init(&p, 100);
    CHECK(p.post_roll_ms == 500);
}

int main(void) {
    test_debounce_ignores_chatter_and_reports_each_edge_once();
    test_ring_keeps_the_newest_samples_for_the_pre_roll();
    test_frames_are_little_endian_and_bounded();
    test_reply_frames_parse_only_when_whole();
    test_backoff_grows_with_full_jitter_and_gives_up();
    test_context_is_refetched_only_when_stale();
    test_a_press_records_then_post_rolls_then_uploads();
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
