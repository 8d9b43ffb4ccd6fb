/*
 * Portable logic of the Forge push-to-talk firmware: no Arduino, no ESP-IDF, no allocation.
 *
 * Everything here is plain C99 so that `make test` builds it with the host's gcc and runs its
 * unit tests (firmware/test/test_ptt_logic.c); the sketch (forge_ptt.ino) only wires it to the
 * I2S microphone and speaker, the button, Wi-Fi and NVS. The wire format is firmware/PROTOCOL.md.
 */
#ifndef FORGE_PTT_LOGIC_H
#define FORGE_PTT_LOGIC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- button debounce: a press counts once the reading has been stable for debounce_ms ------ */

typedef enum { PTT_NONE = 0, PTT_PRESSED = 1, PTT_RELEASED = 2 } ptt_edge_t;

typedef struct {
    uint32_t debounce_ms; /* 30 to 80 ms: shorter chatters, longer feels slow */
    int stable;           /* the debounced state: 1 pressed, 0 released */
    int candidate;        /* the last raw reading */
    uint32_t since_ms;    /* when the raw reading last changed */
} ptt_debounce_t;

/* debounce_ms is clamped to 30..80 ms. */
void ptt_debounce_init(ptt_debounce_t *d, uint32_t debounce_ms, uint32_t now_ms);
/* Feed one raw reading (1 = pressed); returns an edge once the new state has held debounce_ms. */
ptt_edge_t ptt_debounce_update(ptt_debounce_t *d, int raw_pressed, uint32_t now_ms);

/* ---- ring buffer of samples: always filled, so a press starts with the last pre-roll ---------- */

typedef struct {
    int16_t *buf;      /* caller's storage */
    size_t capacity;   /* samples */
    size_t head;       /* next write position */
    size_t count;      /* samples held, <= capacity */
} ptt_ring_t;

void ptt_ring_init(ptt_ring_t *r, int16_t *storage, size_t capacity);
/* Append samples, overwriting the oldest when full. */
void ptt_ring_push(ptt_ring_t *r, const int16_t *samples, size_t n);
/* Copy the newest min(n, count) samples into out, oldest first; returns how many. */
size_t ptt_ring_last(const ptt_ring_t *r, int16_t *out, size_t n);
/* Samples in ms at rate_hz (for sizing the pre-roll: 250 ms at 16 kHz = 4000 samples). */
size_t ptt_samples(uint32_t ms, uint32_t rate_hz);

/* ---- chunk framing (PROTOCOL.md): little-endian whatever the CPU ------------------------------ */

#define PTT_WS_HEADER 8     /* turn (uint32) | seq (uint32) */
#define PTT_HTTP_HEADER 10  /* turn (uint32) | seq (uint32) | length (uint16) */
#define PTT_MAX_CHUNK_BYTES 8820 /* 100 ms at 44.1 kHz: the sidecar refuses larger chunks */

/* Write one websocket audio frame; returns its size, or 0 if out_cap is too small or the chunk too big. */
size_t ptt_frame_ws(uint8_t *out, size_t out_cap, uint32_t turn, uint32_t seq, const int16_t *pcm, size_t samples);
/* Write one chunk of an HTTP press body; same rules. */
size_t ptt_frame_http(uint8_t *out, size_t out_cap, uint32_t turn, uint32_t seq, const int16_t *pcm, size_t samples);
/* Parse one reply frame of an HTTP response ('A' audio or 'J' JSON): returns the frame's total size
 * and sets kind/payload/length, or 0 when buf does not yet hold a whole frame. */
size_t ptt_parse_reply_frame(const uint8_t *buf, size_t len, char *kind, const uint8_t **payload, uint32_t *length);

/* ---- retry with exponential backoff and full jitter ------------------------------------------ */

typedef struct {
    uint32_t base_ms, max_ms;   /* first ceiling, largest ceiling */
    uint32_t attempt, max_attempts;
    uint32_t rng;               /* xorshift32 state, never 0 */
} ptt_backoff_t;

void ptt_backoff_init(ptt_backoff_t *b, uint32_t base_ms, uint32_t max_ms, uint32_t max_attempts, uint32_t seed);
/* 1 and a delay in [0, min(max_ms, base_ms * 2^attempt)] while attempts remain, else 0 (give up).
 * Full jitter keeps many devices that lost Wi-Fi together from retrying in step. */
int ptt_backoff_next(ptt_backoff_t *b, uint32_t *delay_ms);
void ptt_backoff_reset(ptt_backoff_t *b);

/* ---- the cached context: refetch only when the server's ETag differs or it is too old --------- */

typedef struct {
    char etag[48];
    uint32_t fetched_at_s;
    uint32_t max_age_s;  /* refetch after this long even if no heartbeat said so */
    int valid;
} ptt_context_cache_t;

void ptt_context_init(ptt_context_cache_t *c, uint32_t max_age_s);
/* 1 when the cache must be refetched: nothing cached, another ETag, or older than max_age_s. */
int ptt_context_stale(const ptt_context_cache_t *c, const char *server_etag, uint32_t now_s);
void ptt_context_store(ptt_context_cache_t *c, const char *etag, uint32_t now_s);

/* ---- one press: idle → recording → post-roll → uploading ------------------------------------- */

typedef enum { PTT_IDLE = 0, PTT_RECORDING, PTT_POST_ROLL, PTT_UPLOADING } ptt_phase_t;

typedef struct {
    ptt_phase_t phase;
    uint32_t turn;          /* increases per press */
    uint32_t seq;           /* next chunk number of this press */
    uint32_t released_ms;   /* when the button came up */
    uint32_t post_roll_ms;  /* keep recording this long after release: 500 to 800 ms */
} ptt_press_t;

void ptt_press_init(ptt_press_t *p, uint32_t post_roll_ms);
/* Drive with debounced edges and time; returns the phase now. A press while uploading or playing
 * starts a new turn (the sidecar treats it as a barge-in). */
ptt_phase_t ptt_press_step(ptt_press_t *p, ptt_edge_t edge, uint32_t now_ms);
/* The press has been uploaded (release sent): back to idle. */
void ptt_press_uploaded(ptt_press_t *p);

#ifdef __cplusplus
}
#endif

#endif /* FORGE_PTT_LOGIC_H */
