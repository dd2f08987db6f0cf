/* request_reply: worker threads that each send a request over one client
 * session and wait for the matching reply, while that session drops and
 * reconnects under them (the guide, section 13). Self-contained: a line
 * echo server and the client run on one core in this process, and the
 * server drops the connection once, in the middle, when a request asks it
 * to ("drop"). Only libuv's threads, mutexes and condition variables are
 * used, so it builds on Windows too.
 *
 * Prints one summary line; exits 0 when every request got its reply and
 * the "drop" request got the disconnect, 1 otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <cport/cport.h>

#define WORKERS 4
#define REQUESTS 50              /* per worker */
#define LINE_MAX_LEN 64          /* longest request or reply, '\n' included */
#define REQUEST_TIMEOUT_MS 2000  /* for one reply */
#define CONNECT_WAIT_MS 5000     /* for the session to come back */
#define ATTEMPTS 5               /* per request */
#define PENDING 1                /* request_t.status while it waits */

/* ---- the server: echoes lines, drops the connection on "ID drop" ---- */

static size_t server_recv(cport_session_t* s, const uint8_t* data,
                          size_t len) {
  size_t used = 0;
  const uint8_t* nl;
  while ((nl = memchr(data + used, '\n', len - used)) != NULL) {
    size_t n = (size_t)(nl - (data + used)) + 1;
    if (n >= 6 && memcmp(nl - 5, " drop", 5) == 0) {
      cport_session_disconnect(s, "asked to drop"); /* after earlier echoes */
      return len;
    }
    if (cport_session_send(s, data + used, n) == CPORT_ESENDQ)
      break; /* keep the rest until the queue drains */
    used += n;
  }
  return used;
}

/* ---- the client side: one session at a time, shared with the workers ---- */

/* One request in flight: on its worker's stack, in the link's pending list
 * while it waits. */
typedef struct request_s {
  struct request_s* next;
  cport_session_t* session; /* the session it was sent on */
  unsigned id;
  int status; /* PENDING, then 0 (replied) or why it never will be */
  char reply[LINE_MAX_LEN];
} request_t;

typedef struct link_s {
  uv_mutex_t lock;
  uv_cond_t changed;        /* a reply came, or the session came or went */
  cport_session_t* session; /* referenced; NULL while not connected */
  request_t* pending;
  unsigned next_id;
} link_t;

static void on_connected(cport_session_t* s) {
  link_t* link = cport_service_get_data(cport_session_service(s));
  cport_session_ref(s); /* for the workers; on_disconnected drops it */
  uv_mutex_lock(&link->lock);
  link->session = s;
  uv_cond_broadcast(&link->changed);
  uv_mutex_unlock(&link->lock);
}

static void on_disconnected(cport_session_t* s, int code, const char* cause) {
  link_t* link = cport_service_get_data(cport_session_service(s));
  request_t** p = &link->pending;
  (void)cause;
  uv_mutex_lock(&link->lock);
  if (link->session == s)
    link->session = NULL;
  while (*p != NULL) { /* requests sent on `s` will get no reply now */
    if ((*p)->session == s) {
      (*p)->status = code;
      *p = (*p)->next;
    } else {
      p = &(*p)->next;
    }
  }
  uv_cond_broadcast(&link->changed);
  uv_mutex_unlock(&link->lock);
  cport_session_unref(s);
}

static size_t on_recv(cport_session_t* s, const uint8_t* data, size_t len) {
  link_t* link = cport_service_get_data(cport_session_service(s));
  size_t used = 0;
  const uint8_t* nl;
  while ((nl = memchr(data + used, '\n', len - used)) != NULL) {
    size_t n = (size_t)(nl - (data + used)); /* without the '\n' */
    char line[LINE_MAX_LEN];
    request_t** p;
    unsigned id;
    if (n < sizeof(line)) {
      memcpy(line, data + used, n);
      line[n] = '\0';
      id = (unsigned)strtoul(line, NULL, 10);
      uv_mutex_lock(&link->lock);
      for (p = &link->pending; *p != NULL; p = &(*p)->next) {
        if ((*p)->id == id) { /* none: it timed out; drop the reply */
          memcpy((*p)->reply, line, n + 1);
          (*p)->status = 0;
          *p = (*p)->next;
          uv_cond_broadcast(&link->changed);
          break;
        }
      }
      uv_mutex_unlock(&link->lock);
    }
    used += n + 1;
  }
  if (len - used >= LINE_MAX_LEN) { /* no server of ours sends that */
    cport_session_disconnect(s, "reply line too long");
    return len;
  }
  return used;
}

/* Send `text` as one request and wait up to `timeout_ms` for its reply,
 * copied to `reply` (LINE_MAX_LEN bytes). Returns 0; CPORT_ENOTCONN when no
 * session is up right now; the session's disconnect code (CPORT_EOF,
 * CPORT_ECONNRESET, ...) when it ended before the reply came; CPORT_ETIMEDOUT;
 * another error of cport_session_send (CPORT_ESENDQ, ...). */
static int request(link_t* link, const char* text, char* reply,
                   unsigned timeout_ms) {
  uint64_t deadline = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
  char line[LINE_MAX_LEN];
  request_t req;
  int n, rc;

  uv_mutex_lock(&link->lock);
  if (link->session == NULL) {
    uv_mutex_unlock(&link->lock);
    return CPORT_ENOTCONN;
  }
  memset(&req, 0, sizeof(req));
  req.session = link->session;
  req.id = ++link->next_id;
  req.status = PENDING;
  n = snprintf(line, sizeof(line), "%u %s\n", req.id, text);
  if (n < 0 || (size_t)n >= sizeof(line)) {
    uv_mutex_unlock(&link->lock);
    return CPORT_EINVAL;
  }
  /* Listed before the send, so that a quick reply finds it. Sending under
   * the lock is allowed (no cport call runs a callback inside it), and the
   * link's reference keeps the session valid while the lock is held. */
  req.next = link->pending;
  link->pending = &req;
  rc = cport_session_send(req.session, line, (size_t)n);
  if (rc == CPORT_ENOTCONN && link->session == req.session)
    link->session = NULL; /* going away: wait for the next one */
  while (rc == 0 && req.status == PENDING) {
    uint64_t now = uv_hrtime();
    if (now >= deadline)
      rc = CPORT_ETIMEDOUT;
    else
      uv_cond_timedwait(&link->changed, &link->lock, deadline - now);
  }
  if (req.status == PENDING) { /* not sent, or timed out: unlist it */
    request_t** p = &link->pending;
    while (*p != &req)
      p = &(*p)->next;
    *p = req.next;
  } else {
    rc = req.status;
    if (rc == 0)
      memcpy(reply, req.reply, sizeof(req.reply));
  }
  uv_mutex_unlock(&link->lock);
  return rc;
}

/* Wait up to `timeout_ms` for a session. Returns 0 or CPORT_ETIMEDOUT. */
static int wait_connected(link_t* link, unsigned timeout_ms) {
  uint64_t deadline = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
  int rc = 0;
  uv_mutex_lock(&link->lock);
  while (link->session == NULL && rc == 0) {
    uint64_t now = uv_hrtime();
    if (now >= deadline)
      rc = CPORT_ETIMEDOUT;
    else
      uv_cond_timedwait(&link->changed, &link->lock, deadline - now);
  }
  uv_mutex_unlock(&link->lock);
  return rc;
}

/* ---- the program ---- */

typedef struct app_s {
  link_t link; /* first: the client's data points here */
  cport_core_t* core;
  cport_service_t* server;
  cport_service_t* client;
} app_t;

typedef struct worker_s {
  app_t* app;
  unsigned index;
  uv_thread_t thread;
  unsigned replied, failed, not_connected, lost, timed_out;
  int drop_code; /* worker 0: what its "drop" request returned */
} worker_t;

static void server_stopped(cport_service_t* svc) {
  cport_core_stop(cport_service_core(svc)); /* main's cport_core_join returns */
}

static void client_stopped(cport_service_t* svc) {
  app_t* app = cport_service_get_data(svc); /* link is its first member */
  if (cport_service_stop(app->server, 1000, server_stopped) != 0)
    cport_core_stop(app->core);
}

static void stop_job(void* arg) {
  /* The client first, so that its session ends with CPORT_ESTOPPED, which
   * schedules no reconnect. */
  app_t* app = arg;
  if (cport_service_stop(app->client, 1000, client_stopped) != 0)
    cport_core_stop(app->core);
}

static void worker_main(void* arg) {
  worker_t* w = arg;
  link_t* link = &w->app->link;
  char text[32], reply[LINE_MAX_LEN];
  const char* echoed;
  unsigned i, attempt;
  int rc;

  for (i = 0; i < REQUESTS; i++) {
    int drop = w->index == 0 && i == REQUESTS / 2;
    if (drop)
      snprintf(text, sizeof(text), "drop");
    else
      snprintf(text, sizeof(text), "worker %u request %u", w->index, i);
    for (attempt = 1; attempt <= ATTEMPTS; attempt++) {
      rc = request(link, text, reply, REQUEST_TIMEOUT_MS);
      if (rc == 0 || drop)
        break;
      /* An echo may safely be sent again; a request that must not run
       * twice would be reported as failed here instead. */
      if (rc == CPORT_ENOTCONN) {
        w->not_connected++;
        wait_connected(link, CONNECT_WAIT_MS);
      } else if (rc == CPORT_ETIMEDOUT) {
        w->timed_out++;
      } else {
        w->lost++; /* disconnected while it waited */
      }
    }
    echoed = rc == 0 ? strchr(reply, ' ') : NULL;
    if (drop) {
      w->drop_code = rc;
    } else if (echoed != NULL && strcmp(echoed + 1, text) == 0) {
      w->replied++;
    } else {
      fprintf(stderr, "request_reply: '%s': %s\n", text,
              rc == 0 ? "wrong reply" : cport_strerror(rc));
      w->failed++;
    }
  }
}

static int start(app_t* app) {
  cport_service_opts_t sopts, copts;
  cport_addr_t addr;
  int rc;

  rc = cport_core_create(&app->core, NULL);
  if (rc == 0)
    rc = cport_addr_parse(&addr, "127.0.0.1", 0);
  cport_service_opts_init(&sopts);
  sopts.cbs.on_recv = server_recv;
  if (rc == 0)
    rc = cport_service_create(&app->server, app->core, CPORT_SERVICE_SERVER,
                              &addr, &sopts);
  if (rc == 0)
    rc = cport_service_start(app->server);
  if (rc == 0)
    rc = cport_service_local_addr(app->server, &addr); /* the real port */

  cport_service_opts_init(&copts);
  copts.cbs.on_connected = on_connected;
  copts.cbs.on_recv = on_recv;
  copts.cbs.on_disconnected = on_disconnected;
  copts.connect_timeout_ms = 1000;
  copts.reconnect = CPORT_RECONNECT_EXPONENTIAL;
  copts.reconnect_delay_ms = 100; /* 0.1 s, 0.2 s, 0.4 s, ... */
  copts.reconnect_max_ms = 2000;
  copts.data = &app->link;
  if (rc == 0)
    rc = cport_service_create(&app->client, app->core, CPORT_SERVICE_CLIENT,
                              &addr, &copts);
  if (rc == 0)
    rc = cport_service_start(app->client);
  return rc;
}

int main(void) {
  static app_t app;
  worker_t workers[WORKERS];
  cport_service_stats_t st;
  unsigned i, started = 0;
  unsigned replied = 0, failed = 0, not_connected = 0, lost = 0, timed_out = 0;
  int rc, running, ok;

  if (uv_mutex_init(&app.link.lock) != 0)
    return 1;
  if (uv_cond_init(&app.link.changed) != 0) {
    uv_mutex_destroy(&app.link.lock);
    return 1;
  }
  memset(workers, 0, sizeof(workers));
  rc = start(&app);
  if (rc == 0)
    rc = cport_core_run(app.core); /* the loop gets a thread of its own */
  running = rc == 0;
  for (i = 0; rc == 0 && i < WORKERS; i++) {
    workers[i].app = &app;
    workers[i].index = i;
    rc = uv_thread_create(&workers[i].thread, worker_main, &workers[i]);
    if (rc == 0)
      started++;
  }
  if (rc != 0)
    fprintf(stderr, "request_reply: %s\n", cport_strerror(rc));
  for (i = 0; i < started; i++)
    uv_thread_join(&workers[i].thread);
  if (running) {
    if (cport_core_post(app.core, 0, stop_job, &app) != 0)
      cport_core_stop(app.core); /* no memory for the job: no graceful stop */
    cport_core_join(app.core);   /* returns after server_stopped */
  }
  if (cport_service_stats(app.client, &st) != 0)
    memset(&st, 0, sizeof(st));
  cport_service_destroy(app.client);
  cport_service_destroy(app.server);
  cport_core_destroy(app.core);
  uv_cond_destroy(&app.link.changed);
  uv_mutex_destroy(&app.link.lock);

  for (i = 0; i < WORKERS; i++) {
    replied += workers[i].replied;
    failed += workers[i].failed;
    not_connected += workers[i].not_connected;
    lost += workers[i].lost;
    timed_out += workers[i].timed_out;
  }
  printf("request_reply: %u workers, %u requests: %u replied, %u failed, "
         "drop: %s; retries: not connected %u, disconnected while waiting "
         "%u, timed out %u; reconnects %llu\n",
         started, started * REQUESTS, replied, failed,
         cport_err_name(workers[0].drop_code), not_connected, lost,
         timed_out, (unsigned long long)st.reconnects);
  /* The drop request must end with the disconnect, not a reply or a
   * timeout, and the client must have come back after it. */
  ok = rc == 0 && replied == WORKERS * REQUESTS - 1 && failed == 0 &&
       workers[0].drop_code < 0 && workers[0].drop_code != CPORT_ETIMEDOUT &&
       st.reconnects >= 1;
  return ok ? 0 : 1;
}
