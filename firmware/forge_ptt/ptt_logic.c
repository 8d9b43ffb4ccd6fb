/* Portable logic of the Forge push-to-talk firmware; see ptt_logic.h. */
#include "ptt_logic.h"

#include <string.h>

/* ---- debounce -------------------------------------------------------------------------------- */

void ptt_debounce_init(ptt_debounce_t *d, uint32_t debounce_ms, uint32_t now_ms) {
    d->debounce_ms = debounce_ms < 30 ? 30 : (debounce_ms > 80 ? 80 : debounce_ms);
    d->stable = 0;
    d->candidate = 0;
    d->since_ms = now_ms;
}

ptt_edge_t ptt_debounce_update(ptt_debounce_t *d, int raw_pressed, uint32_t now_ms) {
    raw_pressed = raw_pressed ? 1 : 0;
    if (raw_pressed != d->candidate) {
        d->candidate = raw_pressed;
        d->since_ms = now_ms;
        return PTT_NONE;
    }
    /* unsigned subtraction stays right across the millis() wrap at 49.7 days */
    if (d->candidate != d->stable && (uint32_t)(now_ms - d->since_ms) >= d->debounce_ms) {
        d->stable = d->candidate;
        return d->stable ? PTT_PRESSED : PTT_RELEASED;
    }
    return PTT_NONE;
}

/* ---- ring buffer ----------------------------------------------------------------------------- */

void ptt_ring_init(ptt_ring_t *r, int16_t *storage, size_t capacity) {
    r->buf = storage;
    r->capacity = capacity;
    r->head = 0;
    r->count = 0;
}

void ptt_ring_push(ptt_ring_t *r, const int16_t *samples, size_t n) {
    if (r->capacity == 0) return;
    if (n >= r->capacity) { /* only the newest capacity samples can survive */
        samples += n - r->capacity;
        n = r->capacity;
    }
    size_t first = r->capacity - r->head;
    if (first > n) first = n;
    memcpy(r->buf + r->head, samples, first * sizeof(int16_t));
    memcpy(r->buf, samples + first, (n - first) * sizeof(int16_t));
    r->head = (r->head + n) % r->capacity;
    r->count = r->count + n > r->capacity ? r->capacity : r->count + n;
}

size_t ptt_ring_last(const ptt_ring_t *r, int16_t *out, size_t n) {
    if (n > r->count) n = r->count;
    size_t start = (r->head + r->capacity - n) % (r->capacity ? r->capacity : 1);
    for (size_t i = 0; i < n; i++) out[i] = r->buf[(start + i) % r->capacity];
    return n;
}

size_t ptt_samples(uint32_t ms, uint32_t rate_hz) {
    return (size_t)((uint64_t)ms * rate_hz / 1000u);
}

/* ---- framing --------------------------------------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void put_pcm(uint8_t *p, const int16_t *pcm, size_t samples) {
    for (size_t i = 0; i < samples; i++) { /* PCM16 little-endian on any CPU */
        uint16_t s = (uint16_t)pcm[i];
        p[2 * i] = (uint8_t)s;
        p[2 * i + 1] = (uint8_t)(s >> 8);
    }
}

size_t ptt_frame_ws(uint8_t *out, size_t out_cap, uint32_t turn, uint32_t seq, const int16_t *pcm, size_t samples) {
    size_t bytes = samples * 2;
    if (bytes > PTT_MAX_CHUNK_BYTES || out_cap < PTT_WS_HEADER + bytes) return 0;
    put_u32(out, turn);
    put_u32(out + 4, seq);
    put_pcm(out + PTT_WS_HEADER, pcm, samples);
    return PTT_WS_HEADER + bytes;
}

size_t ptt_frame_http(uint8_t *out, size_t out_cap, uint32_t turn, uint32_t seq, const int16_t *pcm, size_t samples) {
    size_t bytes = samples * 2;
    if (bytes > PTT_MAX_CHUNK_BYTES || out_cap < PTT_HTTP_HEADER + bytes) return 0;
    put_u32(out, turn);
    put_u32(out + 4, seq);
    out[8] = (uint8_t)bytes;
    out[9] = (uint8_t)(bytes >> 8);
    put_pcm(out + PTT_HTTP_HEADER, pcm, samples);
    return PTT_HTTP_HEADER + bytes;
}

size_t ptt_parse_reply_frame(const uint8_t *buf, size_t len, char *kind, const uint8_t **payload, uint32_t *length) {
    if (len < 5) return 0;
    uint32_t n = get_u32(buf + 1);
    if ((uint64_t)len < 5u + (uint64_t)n) return 0;
    *kind = (char)buf[0];
    *payload = buf + 5;
    *length = n;
    return 5u + n;
}

/* ---- backoff --------------------------------------------------------------------------------- */

static uint32_t xorshift32(uint32_t *state) {
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

void ptt_backoff_init(ptt_backoff_t *b, uint32_t base_ms, uint32_t max_ms, uint32_t max_attempts, uint32_t seed) {
    b->base_ms = base_ms;
    b->max_ms = max_ms;
    b->max_attempts = max_attempts;
    b->attempt = 0;
    b->rng = seed ? seed : 0x9E3779B9u;
}

int ptt_backoff_next(ptt_backoff_t *b, uint32_t *delay_ms) {
    if (b->attempt >= b->max_attempts) return 0;
    uint64_t ceiling = (uint64_t)b->base_ms << (b->attempt < 31 ? b->attempt : 31);
    if (ceiling > b->max_ms) ceiling = b->max_ms;
    *delay_ms = (uint32_t)(xorshift32(&b->rng) % (uint32_t)(ceiling + 1));
    b->attempt++;
    return 1;
}

void ptt_backoff_reset(ptt_backoff_t *b) { b->attempt = 0; }

/* ---- context cache --------------------------------------------------------------------------- */

void ptt_context_init(ptt_context_cache_t *c, uint32_t max_age_s) {
    memset(c, 0, sizeof(*c));
    c->max_age_s = max_age_s;
}

int ptt_context_stale(const ptt_context_cache_t *c, const char *server_etag, uint32_t now_s) {
    if (!c->valid) return 1;
    if (server_etag && strncmp(c->etag, server_etag, sizeof(c->etag)) != 0) return 1;
    return (uint32_t)(now_s - c->fetched_at_s) >= c->max_age_s;
}

void ptt_context_store(ptt_context_cache_t *c, const char *etag, uint32_t now_s) {
    strncpy(c->etag, etag ? etag : "", sizeof(c->etag) - 1);
    c->etag[sizeof(c->etag) - 1] = '\0';
    c->fetched_at_s = now_s;
    c->valid = 1;
}

/* ---- one press ------------------------------------------------------------------------------- */

void ptt_press_init(ptt_press_t *p, uint32_t post_roll_ms) {
    p->phase = PTT_IDLE;
    p->turn = 0;
    p->seq = 0;
    p->released_ms = 0;
    p->post_roll_ms = post_roll_ms < 500 ? 500 : (post_roll_ms > 800 ? 800 : post_roll_ms);
}

ptt_phase_t ptt_press_step(ptt_press_t *p, ptt_edge_t edge, uint32_t now_ms) {
    if (edge == PTT_PRESSED) { /* from any phase: a new turn (interrupts a reply) */
        p->phase = PTT_RECORDING;
        p->turn++;
        p->seq = 0;
    } else if (edge == PTT_RELEASED && p->phase == PTT_RECORDING) {
        p->phase = PTT_POST_ROLL;
        p->released_ms = now_ms;
    } else if (p->phase == PTT_POST_ROLL && (uint32_t)(now_ms - p->released_ms) >= p->post_roll_ms) {
        p->phase = PTT_UPLOADING;
    }
    return p->phase;
}

void ptt_press_uploaded(ptt_press_t *p) {
    if (p->phase == PTT_UPLOADING) p->phase = PTT_IDLE;
}
