/*
 * Reading a Unix stream socket together with the descriptors that come with its bytes
 * (SCM_RIGHTS), which Node has no API for. This is all the addon does; the connection's writes
 * and its close stay on the net.Socket, which never reads (libuv would take bytes without their
 * descriptors, and the kernel closes descriptors that a recv() without room for them meets).
 *
 * The socket's descriptor is dup'ed and the dup watched with a uv_poll_t on Node's own loop, so
 * nothing competes with libuv for the original. On readability, chunks are received until the
 * queue is empty (or a turn's worth has been read, or JS asks to stop), each handed to the JS
 * callback with its descriptors.
 *
 * Where the descriptors start matters to a monitor (QEMU reads one byte per recvmsg(), so a
 * batch belongs exactly to the bytes it was sent with), but the kernel glues the bytes of
 * earlier sends before the ones that carry descriptors into one recvmsg(). So every chunk is
 * peeked first (see read_chunk()), and every chunk handed to JS either carries no descriptor or
 * begins with the first byte of the send that carried them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

#include "ram_advice.h"
#include "fd_dup.h"
#include "ram_map.h"

#define READ_SIZE (64 * 1024)
/* QEMU's SOCKET_MAX_FDS: a message's descriptors beyond these are dropped by the kernel. */
#define MAX_FDS 16
/*
 * Chunks read per readability event before the loop gets a turn (the poll is level-triggered).
 * As libuv's own stream reads, a chunk shorter than a full read also ends the turn: bytes that
 * arrive while JS handles one chunk wait for the next poll, rather than being read (and their
 * commands queued) from inside this callback.
 */
#define READS_PER_TURN 16
/* Bytes read one at a time, looking for where descriptors start, before a chunk goes up. */
#define SLOW_READ_MAX 4096

typedef struct {
  uv_poll_t poll;
  int fd;
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  char *buf;
  int polling;
  int closing;
  int finished; /* EOF or an error was delivered: nothing more to read */
  int handle_closed;
  int finalized;
} receiver_t;

#define CHECK(env, call)                                   \
  do {                                                     \
    if ((call) != napi_ok) {                               \
      napi_throw_error((env), NULL, "native call failed: " #call); \
      return NULL;                                         \
    }                                                      \
  } while (0)

static void free_if_done(receiver_t *r) {
  if (r->handle_closed && r->finalized) {
    free(r->buf);
    free(r);
  }
}

static void on_handle_closed(uv_handle_t *h) {
  receiver_t *r = h->data;
  close(r->fd);
  r->fd = -1;
  r->handle_closed = 1;
  free_if_done(r);
}

static void begin_close(receiver_t *r) {
  if (r->closing) return;
  r->closing = 1;
  r->polling = 0;
  uv_poll_stop(&r->poll);
  uv_close((uv_handle_t *)&r->poll, on_handle_closed);
  if (!r->finalized) {
    napi_delete_reference(r->env, r->callback);
    napi_async_destroy(r->env, r->async);
  }
}

/* Calls back into JS as an async resource would; an exception becomes an uncaught one. */
static void call_js(receiver_t *r, size_t argc, napi_value *argv) {
  napi_env env = r->env;
  napi_value cb, recv, result;
  if (napi_get_reference_value(env, r->callback, &cb) != napi_ok || cb == NULL) return;
  napi_get_global(env, &recv);
  if (napi_make_callback(env, r->async, recv, cb, argc, argv, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
}

/* callback(errno, chunk, fds, truncated): chunk null with errno 0 is the end of the stream. */
static void deliver(receiver_t *r, int err, const char *data, size_t len, const int *fds, size_t nfds, int truncated) {
  napi_env env = r->env;
  napi_handle_scope scope;
  napi_value argv[4];
  if (r->closing || napi_open_handle_scope(env, &scope) != napi_ok) {
    /* Nobody to give them to any more. */
    for (size_t i = 0; i < nfds; i++) close(fds[i]);
    return;
  }
  napi_create_int32(env, err, &argv[0]);
  if (data) {
    void *copy;
    napi_create_buffer_copy(env, len, data, &copy, &argv[1]);
  } else {
    napi_get_null(env, &argv[1]);
  }
  if (nfds) {
    napi_create_array_with_length(env, nfds, &argv[2]);
    for (size_t i = 0; i < nfds; i++) {
      napi_value v;
      napi_create_int32(env, fds[i], &v);
      napi_set_element(env, argv[2], (uint32_t)i, v);
    }
  } else {
    napi_get_null(env, &argv[2]);
  }
  napi_get_boolean(env, truncated, &argv[3]);
  call_js(r, 4, argv);
  napi_close_handle_scope(env, scope);
}

static void finish(receiver_t *r, int err) {
  r->finished = 1;
  r->polling = 0;
  uv_poll_stop(&r->poll);
  deliver(r, err, NULL, 0, NULL, 0, 0);
}

/* recvmsg() with room for descriptors (appended to fds), close-on-exec; retries EINTR. */
static ssize_t receive(receiver_t *r, char *into, size_t len, int *fds, size_t *nfds, int *truncated) {
  char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  struct iovec iov = {into, len};
  struct msghdr m;
  memset(&m, 0, sizeof m);
  memset(control, 0, sizeof control);
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  ssize_t n;
  do n = recvmsg(r->fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return n;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int got[MAX_FDS];
    memcpy(got, CMSG_DATA(c), (count < MAX_FDS ? count : MAX_FDS) * sizeof(int));
    for (size_t i = 0; i < count && i < MAX_FDS; i++) {
      if (*nfds < MAX_FDS) fds[(*nfds)++] = got[i];
      else close(got[i]);
    }
  }
  if (m.msg_flags & MSG_CTRUNC) *truncated = 1;
  return n;
}

/*
 * One chunk; returns 1 when another read may follow at once (this one filled the buffer), 0
 * when reading stops for this turn (a short read, an empty queue, the end, an error).
 *
 * A peek without room for descriptors says (MSG_CTRUNC) whether a send that carried some is
 * queued, but not where it starts: the kernel's peek walks on to it past the length asked for,
 * and the read that meets it returns it glued after the sends before it. Where it starts
 * matters (it decides which command sees the batch), so while descriptors are queued the bytes
 * are read one at a time, as QEMU reads every byte, until they come; the rest of their send
 * (which ends where the peek stopped, when the peek stopped short) is then read at once.
 */
static int read_chunk(receiver_t *r) {
  struct iovec iov = {r->buf, READ_SIZE};
  struct msghdr m;
  memset(&m, 0, sizeof m);
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  ssize_t n;
  do n = recvmsg(r->fd, &m, MSG_PEEK | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    finish(r, errno);
    return 0;
  }
  if (n == 0) {
    finish(r, 0);
    return 0;
  }
  int fds[MAX_FDS];
  size_t nfds = 0;
  int truncated = 0;
  if (!(m.msg_flags & MSG_CTRUNC)) {
    ssize_t got = receive(r, r->buf, (size_t)n, fds, &nfds, &truncated);
    if (got < 0) {
      finish(r, errno);
      return 0;
    }
    deliver(r, 0, r->buf, (size_t)got, fds, nfds, truncated);
    return got == READ_SIZE;
  }
  size_t before = 0;
  while (before < (size_t)n && before < SLOW_READ_MAX) {
    ssize_t got = receive(r, r->buf + before, 1, fds, &nfds, &truncated);
    if (got <= 0) {
      if (before) deliver(r, 0, r->buf, before, NULL, 0, 0);
      if (got < 0) finish(r, errno);
      return 0;
    }
    if (nfds) break;
    before += (size_t)got;
  }
  if (!nfds) {
    /* None yet: what was read goes up, and the search goes on from here next time. */
    deliver(r, 0, r->buf, before, NULL, 0, 0);
    return before == SLOW_READ_MAX;
  }
  if (before) deliver(r, 0, r->buf, before, NULL, 0, 0);
  if (r->closing) {
    for (size_t i = 0; i < nfds; i++) close(fds[i]);
    return 0;
  }
  r->buf[0] = r->buf[before];
  size_t len = 1;
  if ((size_t)n < READ_SIZE && (size_t)n > before + 1) {
    ssize_t rest = receive(r, r->buf + 1, (size_t)n - before - 1, fds, &nfds, &truncated);
    if (rest > 0) len += (size_t)rest;
  }
  deliver(r, 0, r->buf, len, fds, nfds, truncated);
  return 0;
}

static void on_poll(uv_poll_t *h, int status, int events) {
  receiver_t *r = h->data;
  if (status < 0) {
    finish(r, -status);
    return;
  }
  for (int i = 0; i < READS_PER_TURN && r->polling && !r->closing && !r->finished; i++) {
    if (!read_chunk(r)) break;
  }
}

static void finalize(napi_env env, void *data, void *hint) {
  receiver_t *r = data;
  r->finalized = 1;
  if (!r->closing) {
    /* Dropped without close(): still release the dup and the poll handle. */
    r->closing = 1;
    uv_poll_stop(&r->poll);
    uv_close((uv_handle_t *)&r->poll, on_handle_closed);
    return;
  }
  free_if_done(r);
}

/* The receiver a start/stop/close call was given (its first argument); NULL with an exception. */
static receiver_t *receiver_arg(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_external(env, argv[0], &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "expected a receiver");
    return NULL;
  }
  return data;
}

/* open(fd, callback) -> receiver: dups fd; reading starts with start(). */
static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result, name;
  int32_t fd;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "open(fd, callback)");
    return NULL;
  }
  uv_loop_t *loop;
  CHECK(env, napi_get_uv_event_loop(env, &loop));
  int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) {
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  receiver_t *r = calloc(1, sizeof *r);
  char *buf = malloc(READ_SIZE);
  if (!r || !buf) {
    free(r);
    free(buf);
    close(dup_fd);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  r->buf = buf;
  r->fd = dup_fd;
  r->env = env;
  int err = uv_poll_init(loop, &r->poll, dup_fd);
  if (err) {
    close(dup_fd);
    free(buf);
    free(r);
    napi_throw_error(env, NULL, uv_strerror(err));
    return NULL;
  }
  r->poll.data = r;
  CHECK(env, napi_create_reference(env, argv[1], 1, &r->callback));
  CHECK(env, napi_create_string_utf8(env, "qmigd:unix-reader", NAPI_AUTO_LENGTH, &name));
  CHECK(env, napi_async_init(env, NULL, name, &r->async));
  CHECK(env, napi_create_external(env, r, finalize, NULL, &result));
  return result;
}

static napi_value js_start(napi_env env, napi_callback_info info) {
  receiver_t *r = receiver_arg(env, info);
  if (!r) return NULL;
  if (!r->polling && !r->closing && !r->finished) {
    int err = uv_poll_start(&r->poll, UV_READABLE, on_poll);
    if (err) {
      napi_throw_error(env, NULL, uv_strerror(err));
      return NULL;
    }
    r->polling = 1;
  }
  return NULL;
}

static napi_value js_stop(napi_env env, napi_callback_info info) {
  receiver_t *r = receiver_arg(env, info);
  if (!r) return NULL;
  if (r->polling) {
    uv_poll_stop(&r->poll);
    r->polling = 0;
  }
  return NULL;
}

/* close(receiver): stops and closes the dup (the original stays with its owner). */
static napi_value js_close(napi_env env, napi_callback_info info) {
  receiver_t *r = receiver_arg(env, info);
  if (!r) return NULL;
  begin_close(r);
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL},
      {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
      {"stop", NULL, js_stop, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  if (ram_advice_init(env, exports) != napi_ok) return NULL;
  if (fd_dup_init(env, exports) != napi_ok) return NULL;
  if (ram_map_init(env, exports) != napi_ok) return NULL;
  return exports;
}
