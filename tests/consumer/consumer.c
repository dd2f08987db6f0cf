/* A program outside cport's build, linked against an installed cport
 * (scripts/test-install.sh): an echo server service and a client service
 * on one loop of one core, dispatched until "ping" comes back. Exits 0 when
 * it does, 1 on any error or after 10 seconds. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cport/cport.h>

static const char ping[] = "ping";
static char echoed[sizeof(ping)];
static size_t echoed_len;

static size_t server_on_recv(cport_session_t* s,
                             const uint8_t* data,
                             size_t len) {
  /* Bytes not consumed come back with the next read. */
  return cport_session_send(s, data, len) == 0 ? len : 0;
}

static void client_on_connected(cport_session_t* s) {
  if (cport_session_send(s, ping, strlen(ping)) != 0)
    cport_session_disconnect(s, "send failed");
}

static size_t client_on_recv(cport_session_t* s,
                             const uint8_t* data,
                             size_t len) {
  (void)s;
  if (len > sizeof(echoed) - 1 - echoed_len)
    len = sizeof(echoed) - 1 - echoed_len;
  memcpy(echoed + echoed_len, data, len);
  echoed_len += len;
  return len;
}

static int fail(const char* what, int rc) {
  fprintf(stderr, "consumer: %s: %s\n", what, cport_strerror(rc));
  return 1;
}

static int echo_round_trip(cport_core_t* core) {
  cport_service_t* server = NULL;
  cport_service_t* client = NULL;
  cport_service_opts_t opts;
  cport_addr_t addr;
  time_t deadline;
  int rc;
  int status = 1;

  if ((rc = cport_addr_parse(&addr, "127.0.0.1", 0)) != 0)
    return fail("cport_addr_parse", rc);
  cport_service_opts_init(&opts);
  opts.cbs.on_recv = server_on_recv;
  rc = cport_service_create(&server, core, CPORT_SERVICE_SERVER, &addr, &opts);
  if (rc != 0)
    return fail("server create", rc);
  if ((rc = cport_service_start(server)) != 0) {
    fail("server start", rc);
    goto done;
  }
  /* Loop 0 above: the kernel chose the loop; connect to that one. */
  if ((rc = cport_service_local_addr(server, &addr)) != 0) {
    fail("cport_service_local_addr", rc);
    goto done;
  }
  cport_service_opts_init(&opts);
  opts.cbs.on_connected = client_on_connected;
  opts.cbs.on_recv = client_on_recv;
  rc = cport_service_create(&client, core, CPORT_SERVICE_CLIENT, &addr, &opts);
  if (rc != 0) {
    fail("client create", rc);
    goto done;
  }
  if ((rc = cport_service_start(client)) != 0) {
    fail("client start", rc);
    goto done;
  }
  deadline = time(NULL) + 10;
  while (echoed_len < strlen(ping) && time(NULL) < deadline) {
    rc = cport_core_dispatch(core, 0, 100);
    if (rc < 0) {
      fail("cport_core_dispatch", rc);
      goto done;
    }
  }
  if (echoed_len == strlen(ping) && memcmp(echoed, ping, echoed_len) == 0) {
    status = 0;
  } else {
    fprintf(stderr, "consumer: echo incomplete: %zu bytes\n", echoed_len);
  }

done:
  cport_service_destroy(client);
  cport_service_destroy(server);
  return status;
}

int main(void) {
  cport_core_t* core;
  int rc;
  int status;

  /* The library that runs must be the one whose headers were compiled in. */
  if (strcmp(cport_version(), CPORT_VERSION_STRING) != 0) {
    fprintf(stderr, "consumer: headers say %s, library says %s\n",
            CPORT_VERSION_STRING, cport_version());
    return 1;
  }
  if ((rc = cport_core_create(&core, NULL)) != 0)
    return fail("cport_core_create", rc);
  status = echo_round_trip(core);
  cport_core_destroy(core); /* runs the destroyed services' last callbacks */
  if (status == 0)
    printf("consumer: echo round trip with cport %s: ok\n", cport_version());
  return status;
}
