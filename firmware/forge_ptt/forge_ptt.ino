/*
 * Forge push-to-talk device: ESP32-S3, an I2S MEMS microphone (INMP441), an I2S amplifier
 * (MAX98357A), one push button. Arduino core for ESP32 3.x.
 *
 * Hold the button and talk; let go; the reply plays. The microphone runs all the time into a
 * ring buffer, so a press starts with ~250 ms of pre-roll; recording goes on for the post-roll
 * after release (500-800 ms). Audio is uploaded while the button is held, in 40 ms chunks of a
 * chunked HTTP POST (firmware/PROTOCOL.md), and a failed upload is retried with backoff: the
 * press is kept in PSRAM and re-sent with the same turn and chunk numbers, which the sidecar
 * ignores if it already has them. After a minute idle the device sleeps until the button wakes it.
 *
 * The logic that decides anything (debounce, ring buffer, framing, backoff, context freshness,
 * the press phases) is portable C in ptt_logic.c and is unit-tested on the host by `make test`.
 * This file only moves samples and bytes. Wi-Fi, server and token live in NVS ("forge"
 * namespace), written once over the serial console: `set ssid <name>`, `set pass <secret>`,
 * `set host <sidecar host>`, `set port 8765`, `set token dt_...`.
 */
#include <ESP_I2S.h>
#include <HTTPClient.h>
#include <Preferences.h>
#include <WiFi.h>
#include <esp_sleep.h>
#include <time.h>

#include "ptt_logic.h"

// ---- wiring (change to your board) ---------------------------------------------------------------
static const int PIN_BUTTON = 0;                              // to GND, internal pull-up; wakes from deep sleep
static const int MIC_BCLK = 4, MIC_WS = 5, MIC_DIN = 6;       // INMP441
static const int AMP_BCLK = 15, AMP_WS = 16, AMP_DOUT = 17;  // MAX98357A
static const uint32_t RATE = 16000;                          // upload and reply rate (PROTOCOL.md: 16000 or 44100)
static const uint32_t CHUNK_MS = 40;
static const uint32_t IDLE_SLEEP_MS = 60000;
static const uint32_t MAX_PRESS_S = 60;                      // the sidecar's FORGE_MAX_TURN_S
static const char *FIRMWARE = "0.1.0";

I2SClass mic, amp;
Preferences prefs;
ptt_debounce_t button;
ptt_ring_t ring;
ptt_press_t press;
ptt_backoff_t backoff;
ptt_context_cache_t context;

static int16_t ring_storage[16000];         // 1 s of history at 16 kHz: room for any pre-roll
static int16_t *press_audio = nullptr;       // the whole press, in PSRAM, for re-sends
static size_t press_samples = 0, sent_samples = 0;
static uint32_t pre_roll_ms = 250, post_roll_ms = 600, last_activity = 0;
static String host, token;
static uint16_t port = 8765;
static WiFiClient link;

// ---- audio ---------------------------------------------------------------------------------------
static void audio_begin() {
  mic.setPins(MIC_BCLK, MIC_WS, -1, MIC_DIN);
  mic.begin(I2S_MODE_STD, RATE, I2S_DATA_BIT_WIDTH_32BIT, I2S_SLOT_MODE_MONO, I2S_STD_SLOT_LEFT);
  amp.setPins(AMP_BCLK, AMP_WS, AMP_DOUT);
  amp.begin(I2S_MODE_STD, RATE, I2S_DATA_BIT_WIDTH_16BIT, I2S_SLOT_MODE_MONO);
}

// Read what the microphone has: INMP441 gives 24-bit samples left-justified in 32-bit slots.
static size_t mic_read(int16_t *out, size_t max_samples) {
  int32_t raw[256];
  size_t want = max_samples < 256 ? max_samples : 256;
  size_t got = mic.readBytes((char *)raw, want * sizeof(int32_t)) / sizeof(int32_t);
  for (size_t i = 0; i < got; i++) out[i] = (int16_t)(raw[i] >> 14);  // 24-bit → 16-bit, +6 dB
  return got;
}

// ---- settings and Wi-Fi --------------------------------------------------------------------------
static void load_settings() {
  prefs.begin("forge", false);
  host = prefs.getString("host", "");
  port = prefs.getUShort("port", 8765);
  token = prefs.getString("token", "");
  pre_roll_ms = prefs.getUInt("pre_roll", 250);
  post_roll_ms = prefs.getUInt("post_roll", 600);
  ptt_context_init(&context, 3600);
  String etag = prefs.getString("etag", "");
  if (etag.length()) ptt_context_store(&context, etag.c_str(), 0);
}

static void serial_console() {  // "set <key> <value>" lines, saved to NVS
  if (!Serial.available()) return;
  String line = Serial.readStringUntil('\n');
  line.trim();
  if (!line.startsWith("set ")) return;
  int space = line.indexOf(' ', 4);
  String key = line.substring(4, space), value = line.substring(space + 1);
  if (key == "port") prefs.putUShort("port", value.toInt());
  else prefs.putString(key.c_str(), value);
  Serial.printf("saved %s\n", key.c_str());
  load_settings();
}

static bool wifi_up() {
  if (WiFi.status() == WL_CONNECTED) return true;
  WiFi.begin(prefs.getString("ssid", "").c_str(), prefs.getString("pass", "").c_str());
  ptt_backoff_init(&backoff, 250, 8000, 6, esp_random());
  uint32_t delay_ms;
  while (WiFi.status() != WL_CONNECTED) {
    if (!ptt_backoff_next(&backoff, &delay_ms)) return false;
    delay(delay_ms + 200);
  }
  return true;
}

// ---- housekeeping on wake (PROTOCOL.md): heartbeat, then settings and context only if stale ----
// A two-field reader is enough here: the sidecar's JSON is flat, and a JSON library would cost
// more flash than the rest of the sketch.
static String json_field(const String &body, const char *key) {
  String needle = String("\"") + key + "\":";
  int at = body.indexOf(needle);
  if (at < 0) return "";
  at += needle.length();
  while (body[at] == ' ') at++;
  if (body[at] != '"') return body.substring(at, body.indexOf(body.indexOf(',', at) >= 0 ? ',' : '}', at));
  String out;
  for (int i = at + 1; i < (int)body.length() && body[i] != '"'; i++) {
    if (body[i] == '\\' && i + 1 < (int)body.length()) i++;  // \" inside the string
    out += body[i];
  }
  return out;
}

static int http_call(HTTPClient &http, const char *method, const String &path, const String &body = "",
                     const String &if_none_match = "") {
  http.begin(String("http://") + host + ":" + port + path);
  http.addHeader("Authorization", "Bearer " + token);
  if (if_none_match.length()) http.addHeader("If-None-Match", if_none_match);
  const char *keep[] = {"ETag"};
  http.collectHeaders(keep, 1);
  if (!strcmp(method, "POST")) {
    http.addHeader("Content-Type", "application/json");
    return http.POST(body);
  }
  return http.GET();
}

static void sync_with_sidecar() {
  HTTPClient http;
  String beat = String("{\"firmware\":\"") + FIRMWARE + "\",\"rssi\":" + WiFi.RSSI() + "}";
  if (http_call(http, "POST", "/device/heartbeat", beat) != 200) { http.end(); return; }
  String body = http.getString();
  http.end();
  uint32_t version = json_field(body, "settings_version").toInt();
  if (version != prefs.getUInt("settings_v", 0) && http_call(http, "GET", "/device/settings") == 200) {
    String settings = http.getString();
    prefs.putUInt("pre_roll", json_field(settings, "pre_roll_ms").toInt());
    prefs.putUInt("post_roll", json_field(settings, "post_roll_ms").toInt());
    prefs.putUInt("volume", json_field(settings, "volume").toInt());
    prefs.putUInt("settings_v", version);
  }
  http.end();
  uint32_t now_s = (uint32_t)time(nullptr);  // RTC time: keeps counting through deep sleep
  if (ptt_context_stale(&context, json_field(body, "context_etag").c_str(), now_s)) {
    int code = http_call(http, "GET", "/device/context", "", context.valid ? String(context.etag) : "");
    if (code == 200) {
      prefs.putString("context", http.getString());  // what the device may say offline
      ptt_context_store(&context, http.header("ETag").c_str(), now_s);
      prefs.putString("etag", context.etag);
    } else if (code == 304) {
      ptt_context_store(&context, context.etag, now_s);
    }
    http.end();
  }
  load_settings();
}

// ---- the HTTP carrier (PROTOCOL.md "A press over HTTP") -----------------------------------------
static bool http_open() {
  if (!link.connect(host.c_str(), port)) return false;
  link.printf("POST /device/turn?rate=%u HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
              "Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n",
              (unsigned)RATE, host.c_str(), token.c_str());
  return true;
}

static bool http_chunk(uint32_t turn, uint32_t seq, const int16_t *pcm, size_t samples) {
  static uint8_t frame[PTT_HTTP_HEADER + PTT_MAX_CHUNK_BYTES];
  size_t n = ptt_frame_http(frame, sizeof frame, turn, seq, pcm, samples);
  if (!n || !link.connected()) return false;
  link.printf("%x\r\n", (unsigned)n);  // HTTP/1.1 chunked transfer: hex size, data, CRLF
  link.write(frame, n);
  link.print("\r\n");
  return true;
}

// Upload whatever of the press has not gone out yet, in 40 ms chunks.
static bool upload_pending() {
  size_t step = ptt_samples(CHUNK_MS, RATE);
  while (press_samples - sent_samples >= step || (press.phase == PTT_UPLOADING && sent_samples < press_samples)) {
    size_t n = press_samples - sent_samples < step ? press_samples - sent_samples : step;
    if (!http_chunk(press.turn, press.seq, press_audio + sent_samples, n)) return false;
    press.seq++;
    sent_samples += n;
  }
  return true;
}

// Release: end the body, then play the reply frames as they arrive. The sidecar streams the
// response with chunked transfer encoding; each HTTP chunk is de-chunked into buf, where reply
// frames (PROTOCOL.md: kind, uint32 length, payload) are cut out as soon as they are whole.
static bool finish_and_play() {
  link.print("0\r\n\r\n");
  link.setTimeout(15000);
  String status = link.readStringUntil('\n');
  if (status.indexOf(" 200 ") < 0) return false;
  while (link.connected()) {  // skip the response headers
    String header = link.readStringUntil('\n');
    if (header == "\r" || header.length() == 0) break;
  }
  static uint8_t buf[PTT_MAX_CHUNK_BYTES * 2];
  size_t have = 0;
  bool done = false;
  while (!done && (link.connected() || link.available())) {
    long size = strtol(link.readStringUntil('\n').c_str(), nullptr, 16);  // HTTP chunk size, hex
    if (size <= 0) break;                                                  // "0": end of body
    while (size > 0) {
      size_t room = sizeof buf - have;
      size_t want = (size_t)size < room ? (size_t)size : room;
      size_t got = link.readBytes(buf + have, want);
      if (!got) return false;
      have += got;
      size -= got;
      char kind; const uint8_t *payload; uint32_t length; size_t used;
      while ((used = ptt_parse_reply_frame(buf, have, &kind, &payload, &length)) > 0) {
        if (kind == 'A') amp.write(payload, length);
        if (kind == 'J' && memmem(payload, length, "\"done\"", 6)) done = true;
        memmove(buf, buf + used, have - used);
        have -= used;
      }
      if (digitalRead(PIN_BUTTON) == LOW) { link.stop(); return true; }  // pressed again: interrupt
    }
    link.readStringUntil('\n');  // the CRLF after each chunk
  }
  link.stop();
  return true;
}

// ---- main loop -----------------------------------------------------------------------------------
void setup() {
  Serial.begin(115200);
  pinMode(PIN_BUTTON, INPUT_PULLUP);
  load_settings();
  audio_begin();
  ptt_ring_init(&ring, ring_storage, sizeof ring_storage / sizeof ring_storage[0]);
  ptt_debounce_init(&button, 50, millis());
  ptt_press_init(&press, post_roll_ms);
  press_audio = (int16_t *)ps_malloc(MAX_PRESS_S * RATE * sizeof(int16_t));
  if (wifi_up()) {
    configTime(0, 0, "pool.ntp.org");
    sync_with_sidecar();  // every wake: tell the sidecar we are here; refresh only what is stale
  }
  last_activity = millis();
}

void loop() {
  serial_console();
  int16_t samples[256];
  size_t n = mic_read(samples, 256);
  ptt_ring_push(&ring, samples, n);
  ptt_edge_t edge = ptt_debounce_update(&button, digitalRead(PIN_BUTTON) == LOW, millis());
  ptt_phase_t before = press.phase;
  ptt_phase_t phase = ptt_press_step(&press, edge, millis());

  if (edge == PTT_PRESSED) {  // a new turn starts with the pre-roll
    last_activity = millis();
    press_samples = ptt_ring_last(&ring, press_audio, ptt_samples(pre_roll_ms, RATE));
    sent_samples = 0;
    if (!wifi_up() || !http_open()) Serial.println("upload will be retried at release");
    return;
  }
  if (phase == PTT_RECORDING || phase == PTT_POST_ROLL) {
    size_t room = MAX_PRESS_S * RATE - press_samples;
    size_t keep = n < room ? n : room;
    memcpy(press_audio + press_samples, samples, keep * sizeof(int16_t));
    press_samples += keep;
    if (link.connected()) upload_pending();  // a dropped link is caught up at release
  }
  if (phase == PTT_UPLOADING && before != PTT_UPLOADING) {
    ptt_backoff_init(&backoff, 250, 8000, 5, esp_random());
    uint32_t delay_ms;
    bool done = link.connected() && upload_pending() && finish_and_play();
    while (!done && ptt_backoff_next(&backoff, &delay_ms)) {  // re-send the whole press: idempotent
      delay(delay_ms);
      link.stop();
      sent_samples = 0;
      press.seq = 0;
      done = wifi_up() && http_open() && upload_pending() && finish_and_play();
    }
    ptt_press_uploaded(&press);
    last_activity = millis();
  }
  if (press.phase == PTT_IDLE && millis() - last_activity > IDLE_SLEEP_MS) {
    esp_sleep_enable_ext0_wakeup((gpio_num_t)PIN_BUTTON, 0);  // the button (active low) wakes us
    esp_deep_sleep_start();
  }
}
