/* echo_min: a server that sends back every byte it receives (the guide,
 * section 3). */
#include <stdio.h>
#include <cport/cport.h>

static size_t on_recv(cport_session_t* s, const uint8_t* data, size_t len) {
  /* send copies the bytes; `data` is only valid during this call. */
  if (cport_session_send(s, data, len) == CPORT_ESENDQ)
    return 0; /* queue full: keep the bytes, see "Backpressure" */
  return len; /* all consumed */
}

static void on_disconnected(cport_session_t* s, int code, const char* cause) {
  printf("session %llu closed: %s (%s)\n",
         (unsigned long long)cport_session_id(s), cause, cport_err_name(code));
}

int main(void) {
  cport_core_t* core = NULL;
  cport_service_t* svc = NULL;
  cport_service_opts_t opts;
  cport_addr_t addr;
  char text[CPORT_ADDR_STRLEN];
  int rc;

  rc = cport_core_create(&core, NULL);
  if (rc == 0)
    rc = cport_addr_parse(&addr, "127.0.0.1", 7777);
  cport_service_opts_init(&opts);
  opts.cbs.on_recv = on_recv;
  opts.cbs.on_disconnected = on_disconnected;
  if (rc == 0)
    rc = cport_service_create(&svc, core, CPORT_SERVICE_SERVER, &addr, &opts);
  if (rc == 0)
    rc = cport_service_start(svc); /* bind and listen errors show here */
  if (rc != 0) {
    fprintf(stderr, "echo: %s\n", cport_strerror(rc));
    cport_service_destroy(svc);
    cport_core_destroy(core);
    return 1;
  }
  cport_service_local_addr(svc, &addr);
  cport_addr_format(&addr, text, sizeof(text));
  printf("listening on %s\n", text);

  cport_core_run(core);  /* one thread per loop; returns at once */
  cport_core_join(core); /* blocks until cport_core_stop() */
  cport_service_destroy(svc);
  cport_core_destroy(core);
  return 0;
}
