/*
 * ramboot's sendfile(2) path (N-API, Linux): copies a file range to a connected non-blocking TCP
 * socket inside the kernel, driven by the Node event loop (a uv_poll on a dup of the socket), so no
 * byte passes through JS and no libuv thread-pool thread is held while a client is slow.
 *
 *   start(socketFd, fileFd, offset, length, done) -> job   both fds are dup'ed: the caller keeps
 *                                                          (and closes) its own; done(errno, sent)
 *                                                          is called exactly once (errno 0 = all sent)
 *   sent(job) -> bytes sent so far (for stall detection)
 *   cancel(job)  stop now: done(ECANCELED, sent) is called, the dups are closed
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>
#include <node_api.h>
#include <uv.h>

/* At most this much per wake-up, so one fast client cannot monopolise the loop. */
#define BUDGET (8 << 20)

/* The JS handle: an external wrapping a small box, so cancel/sent after completion are harmless. */
struct job;
typedef struct box { struct job *job; } box_t;

struct box;
typedef struct job {
  uv_poll_t poll;
  struct box *box; /* the JS handle's box while both live */
  napi_env env;
  napi_ref done;
  napi_async_context ctx;
  int sock, file;
  int64_t offset, remaining, sent;
  int finished;
} job_t;

static void box_free(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  box_t *b = (box_t *)data;
  if (b->job) b->job->box = NULL;
  free(b);
}

static void on_closed(uv_handle_t *h) {
  job_t *j = (job_t *)h->data;
  free(j);
}

static void finish(job_t *j, int err) {
  if (j->finished) return;
  j->finished = 1;
  if (j->box) { j->box->job = NULL; j->box = NULL; }
  uv_poll_stop(&j->poll);
  close(j->sock);
  close(j->file);
  j->sock = j->file = -1;
  napi_env env = j->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, argv[2], result;
  napi_get_reference_value(env, j->done, &cb);
  napi_get_global(env, &recv);
  napi_create_int32(env, err, &argv[0]);
  napi_create_int64(env, j->sent, &argv[1]);
  if (napi_make_callback(env, j->ctx, recv, cb, 2, argv, &result) != napi_ok) {
    /* the callback threw: hand it to Node's uncaught-exception handling like any other callback */
    bool pending = false;
    napi_value exc;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending && napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
  }
  napi_delete_reference(env, j->done);
  napi_async_destroy(env, j->ctx);
  napi_close_handle_scope(env, scope);
  /* the JS job object may outlive us: it holds a pointer only while finished == 0 (see job_of) */
  uv_close((uv_handle_t *)&j->poll, on_closed);
}

static void on_writable(uv_poll_t *p, int status, int events) {
  job_t *j = (job_t *)p->data;
  (void)events;
  if (status < 0) {
    /* libuv reports POLLERR as UV_EBADF and stops watching: take the socket's real error */
    int e = 0;
    socklen_t len = sizeof e;
    if (getsockopt(j->sock, SOL_SOCKET, SO_ERROR, &e, &len) != 0 || e == 0) e = ECONNRESET;
    finish(j, e);
    return;
  }
  int64_t budget = BUDGET;
  while (j->remaining > 0 && budget > 0) {
    size_t want = (size_t)(j->remaining < budget ? j->remaining : budget);
    off_t off = (off_t)j->offset;
    ssize_t n = sendfile(j->sock, j->file, &off, want);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return; /* wait for the next writable event */
      finish(j, errno);
      return;
    }
    if (n == 0) { finish(j, EIO); return; } /* the file is shorter than announced */
    j->offset += n;
    j->remaining -= n;
    j->sent += n;
    budget -= n;
  }
  if (j->remaining == 0) finish(j, 0);
}

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, #call " failed"); return NULL; } } while (0)


static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) { napi_throw_type_error(env, NULL, "start(socketFd, fileFd, offset, length, done)"); return NULL; }
  int32_t sock, file;
  int64_t offset, length;
  CHECK(napi_get_value_int32(env, argv[0], &sock));
  CHECK(napi_get_value_int32(env, argv[1], &file));
  CHECK(napi_get_value_int64(env, argv[2], &offset));
  CHECK(napi_get_value_int64(env, argv[3], &length));
  napi_valuetype t;
  CHECK(napi_typeof(env, argv[4], &t));
  if (t != napi_function || sock < 0 || file < 0 || offset < 0 || length < 0) { napi_throw_type_error(env, NULL, "bad arguments"); return NULL; }
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  job_t *j = calloc(1, sizeof *j);
  box_t *b = calloc(1, sizeof *b);
  if (!j || !b) { free(j); free(b); napi_throw_error(env, NULL, "out of memory"); return NULL; }
  j->sock = fcntl(sock, F_DUPFD_CLOEXEC, 3);
  j->file = fcntl(file, F_DUPFD_CLOEXEC, 3);
  if (j->sock < 0 || j->file < 0) {
    int e = errno;
    if (j->sock >= 0) close(j->sock);
    if (j->file >= 0) close(j->file);
    free(j); free(b);
    napi_throw_error(env, NULL, e == EMFILE ? "EMFILE: too many open files" : "dup failed");
    return NULL;
  }
  posix_fadvise(j->file, offset, length, POSIX_FADV_SEQUENTIAL);
  j->env = env;
  j->offset = offset;
  j->remaining = length;
  int r = uv_poll_init(loop, &j->poll, j->sock);
  if (r < 0) { close(j->sock); close(j->file); free(j); free(b); napi_throw_error(env, NULL, uv_strerror(r)); return NULL; }
  j->poll.data = j;
  napi_value name, resource;
  CHECK(napi_create_string_utf8(env, "ramboot.sendfile", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_object(env, &resource));
  CHECK(napi_async_init(env, resource, name, &j->ctx));
  CHECK(napi_create_reference(env, argv[4], 1, &j->done));
  b->job = j;
  napi_value ext;
  CHECK(napi_create_external(env, b, box_free, NULL, &ext));
  j->box = b;
  r = uv_poll_start(&j->poll, UV_WRITABLE, on_writable);
  if (r < 0) finish(j, -r);
  return ext;
}

/* The job behind a handle, or NULL once it finished (finish() clears box->job). */
static job_t *job_of(napi_env env, napi_value v, box_t **box) {
  void *data = NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok || !data) return NULL;
  *box = (box_t *)data;
  return (*box)->job;
}

static napi_value cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  box_t *b = NULL;
  job_t *j = argc ? job_of(env, argv[0], &b) : NULL;
  if (j && !j->finished) finish(j, ECANCELED);
  return NULL;
}

static napi_value sent(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  box_t *b = NULL;
  job_t *j = argc ? job_of(env, argv[0], &b) : NULL;
  CHECK(napi_create_int64(env, j && !j->finished ? j->sent : -1, &out));
  return out;
}

NAPI_MODULE_INIT() {
  napi_value f;
  napi_create_function(env, "start", NAPI_AUTO_LENGTH, start, NULL, &f);
  napi_set_named_property(env, exports, "start", f);
  napi_create_function(env, "cancel", NAPI_AUTO_LENGTH, cancel, NULL, &f);
  napi_set_named_property(env, exports, "cancel", f);
  napi_create_function(env, "sent", NAPI_AUTO_LENGTH, sent, NULL, &f);
  napi_set_named_property(env, exports, "sent", f);
  return exports;
}
