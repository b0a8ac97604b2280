/*
 * ptdemo: a stand-in for Packet Tracer with the behaviour pt-instance-manager relies on.
 * It listens on its IPC port, answers PING, loads a named file, reports what is loaded, and can be
 * told to be slow, to stop answering or to exit, so readiness failures can be exercised.
 *
 * Server:  ptdemo [serve]           (settings from the environment, see README.md)
 * Client:  ptdemo ctl [--host H] [--port N] [--timeout MS] COMMAND [ARGS...]
 *
 * Build:   gcc -O2 -static -pthread -Wall -Wextra -o ptdemo ptdemo.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 8192

static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static char loaded[4096];
static long long loaded_size = -1;
static long resets = 0;
static int failing = 0;
static int never_ready = 0;
static long reply_delay_ms = 0;
static const char *default_file = "/files/default.pkt";
static long long started_ms;

static long env_long(const char *name, long fallback) {
  const char *value = getenv(name);
  if (value == NULL || *value == '\0') return fallback;
  return strtol(value, NULL, 10);
}

static const char *env_string(const char *name, const char *fallback) {
  const char *value = getenv(name);
  return value != NULL && *value != '\0' ? value : fallback;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
  if (ms <= 0) return;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
}

/* True when path has a ".." segment ("..", "../x", "x/..", "x/../y"). */
static int has_dotdot(const char *path) {
  const char *p = path;
  while ((p = strstr(p, "..")) != NULL) {
    int starts = (p == path) || p[-1] == '/';
    int ends = p[2] == '\0' || p[2] == '/';
    if (starts && ends) return 1;
    p += 2;
  }
  return 0;
}

/*
 * Loads path: it must be a readable regular file. With missing_ok, a path that does not exist is
 * accepted as loaded with size -1 (the default file need not be present). Writes the reply line and
 * returns 0 when something was loaded, -1 otherwise (the previous file stays loaded).
 */
static int load_file(const char *path, int missing_ok, char *reply, size_t size) {
  if (path[0] == '\0' || has_dotdot(path) || strlen(path) >= sizeof loaded) {
    snprintf(reply, size, "ERR bad path");
    return -1;
  }
  long long file_size = -1;
  int error = 0;
  struct stat st;
  /* O_NONBLOCK: opening a FIFO must not hang the connection. */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    error = errno;
  } else {
    if (fstat(fd, &st) != 0) error = errno;
    else if (S_ISDIR(st.st_mode)) error = EISDIR;
    else if (!S_ISREG(st.st_mode)) error = EINVAL;
    else file_size = (long long)st.st_size;
    close(fd);
  }
  if (error != 0 && !(missing_ok && (error == ENOENT || error == ENOTDIR))) {
    snprintf(reply, size, "ERR cannot load %s: %s", path, strerror(error));
    return -1;
  }
  pthread_mutex_lock(&state_lock);
  snprintf(loaded, sizeof loaded, "%s", path);
  loaded_size = file_size;
  pthread_mutex_unlock(&state_lock);
  snprintf(reply, size, "OK %s %lld", path, file_size);
  return 0;
}

/* Appends text to out as the inside of a JSON string. */
static size_t json_escape(char *out, size_t size, const char *text) {
  size_t used = 0;
  for (const unsigned char *c = (const unsigned char *)text; *c && used + 7 < size; c++) {
    if (*c == '"' || *c == '\\') {
      out[used++] = '\\';
      out[used++] = (char)*c;
    } else if (*c < 0x20) {
      used += (size_t)snprintf(out + used, size - used, "\\u%04x", *c);
    } else {
      out[used++] = (char)*c;
    }
  }
  out[used] = '\0';
  return used;
}

static void status_json(char *out, size_t size) {
  char path[6144]; /* escaping only grows paths with quotes, backslashes or control characters */
  pthread_mutex_lock(&state_lock);
  json_escape(path, sizeof path, loaded);
  snprintf(out, size, "{\"loaded\":\"%s\",\"size\":%lld,\"resets\":%ld,\"pid\":%d,\"uptimeMs\":%lld,\"failing\":%s}", path,
           loaded_size, resets, (int)getpid(), now_ms() - started_ms, failing ? "true" : "false");
  pthread_mutex_unlock(&state_lock);
}

static int write_all(int fd, const char *data, size_t length) {
  while (length > 0) {
    ssize_t written = send(fd, data, length, MSG_NOSIGNAL);
    if (written < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    data += written;
    length -= (size_t)written;
  }
  return 0;
}

static void reply_delay(void) {
  long delay;
  pthread_mutex_lock(&state_lock);
  delay = reply_delay_ms;
  pthread_mutex_unlock(&state_lock);
  sleep_ms(delay);
}

static void reply_line(int fd, const char *line) {
  char buffer[LINE_MAX_BYTES + 2];
  reply_delay();
  int n = snprintf(buffer, sizeof buffer, "%s\n", line);
  if (n >= (int)sizeof buffer) {
    n = (int)sizeof buffer - 1;
    buffer[n - 1] = '\n';
  }
  write_all(fd, buffer, (size_t)n);
}

/* Handles one command line (without its line end). */
static void handle_command(int fd, char *line) {
  char reply[LINE_MAX_BYTES];
  char *command = line;
  while (*command == ' ' || *command == '\t') command++;
  char *argument = command;
  while (*argument && *argument != ' ' && *argument != '\t') argument++;
  if (*argument) *argument++ = '\0';
  while (*argument == ' ' || *argument == '\t') argument++;

  if (never_ready) return; /* reads everything, answers nothing */
  int is_failing;
  pthread_mutex_lock(&state_lock);
  is_failing = failing;
  pthread_mutex_unlock(&state_lock);
  if (is_failing && strcasecmp(command, "HEAL") != 0) return;

  if (strcasecmp(command, "PING") == 0) {
    reply_line(fd, "PONG");
  } else if (strcasecmp(command, "LOAD") == 0) {
    load_file(argument, 0, reply, sizeof reply);
    reply_line(fd, reply);
  } else if (strcasecmp(command, "RESET") == 0) {
    if (load_file(default_file, 1, reply, sizeof reply) == 0) {
      pthread_mutex_lock(&state_lock);
      resets++;
      pthread_mutex_unlock(&state_lock);
    }
    reply_line(fd, reply);
  } else if (strcasecmp(command, "STATUS") == 0) {
    status_json(reply, sizeof reply);
    reply_line(fd, reply);
  } else if (strcasecmp(command, "FAIL") == 0) {
    reply_line(fd, "OK failing");
    pthread_mutex_lock(&state_lock);
    failing = 1;
    pthread_mutex_unlock(&state_lock);
  } else if (strcasecmp(command, "HEAL") == 0) {
    pthread_mutex_lock(&state_lock);
    failing = 0;
    pthread_mutex_unlock(&state_lock);
    reply_line(fd, "OK healed");
  } else if (strcasecmp(command, "SLOW") == 0) {
    char *end;
    long ms = strtol(argument, &end, 10);
    if (end == argument || *end != '\0' || ms < 0) {
      reply_line(fd, "ERR usage: SLOW <ms>");
      return;
    }
    pthread_mutex_lock(&state_lock);
    reply_delay_ms = ms;
    pthread_mutex_unlock(&state_lock);
    snprintf(reply, sizeof reply, "OK slow %ld", ms);
    reply_line(fd, reply);
  } else if (strcasecmp(command, "EXIT") == 0) {
    int code = (int)strtol(argument, NULL, 10);
    reply_line(fd, "OK exiting");
    fflush(stdout);
    _exit(code);
  } else {
    reply_line(fd, "ERR unknown command");
  }
}

/* Answers an HTTP GET with the status JSON (200, or 503 when failing or never ready), then returns. */
static void answer_http(int fd, char *buffered, size_t length, size_t capacity) {
  /* Skip the request headers up to the empty line (or the end of the connection). */
  for (;;) {
    buffered[length] = '\0';
    if (strstr(buffered, "\r\n\r\n") || strstr(buffered, "\n\n")) break;
    if (length >= capacity - 1) {
      /* Keep the tail only: the blank line may span the boundary. */
      memmove(buffered, buffered + length - 3, 3);
      length = 3;
    }
    ssize_t got = recv(fd, buffered + length, capacity - 1 - length, 0);
    if (got <= 0) break;
    length += (size_t)got;
  }
  char body[LINE_MAX_BYTES];
  char response[LINE_MAX_BYTES + 256];
  status_json(body, sizeof body);
  int bad;
  pthread_mutex_lock(&state_lock);
  bad = failing || never_ready;
  pthread_mutex_unlock(&state_lock);
  if (!never_ready) reply_delay();
  int n = snprintf(response, sizeof response,
                   "HTTP/1.0 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                   bad ? "503 Service Unavailable" : "200 OK", strlen(body), body);
  write_all(fd, response, (size_t)n);
  shutdown(fd, SHUT_WR);
}

static void *serve_connection(void *arg) {
  int fd = (int)(long)arg;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char buffer[LINE_MAX_BYTES];
  size_t length = 0;
  int first = 1;
  for (;;) {
    ssize_t got = recv(fd, buffer + length, sizeof buffer - 1 - length, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    length += (size_t)got;
    buffer[length] = '\0';
    if (first && length >= 4 && strncmp(buffer, "GET ", 4) == 0) {
      answer_http(fd, buffer, length, sizeof buffer);
      break;
    }
    char *newline;
    while ((newline = memchr(buffer, '\n', length)) != NULL) {
      first = 0;
      *newline = '\0';
      size_t used = (size_t)(newline - buffer) + 1;
      if (newline > buffer && newline[-1] == '\r') newline[-1] = '\0';
      char line[LINE_MAX_BYTES];
      memcpy(line, buffer, used);
      memmove(buffer, buffer + used, length - used);
      length -= used;
      handle_command(fd, line);
    }
    if (length >= sizeof buffer - 1) {
      if (!never_ready) reply_line(fd, "ERR line too long");
      break;
    }
  }
  close(fd);
  return NULL;
}

static int listen_on(const char *bind_address, long port) {
  struct sockaddr_in address;
  memset(&address, 0, sizeof address);
  address.sin_family = AF_INET;
  address.sin_port = htons((uint16_t)port);
  if (port < 1 || port > 65535 || inet_pton(AF_INET, bind_address, &address.sin_addr) != 1) {
    fprintf(stderr, "ptdemo: bad listen address %s:%ld (need an IPv4 address and a port 1-65535)\n", bind_address, port);
    return -1;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fprintf(stderr, "ptdemo: socket: %s\n", strerror(errno));
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0 || listen(fd, 512) != 0) {
    fprintf(stderr, "ptdemo: cannot listen on %s:%ld: %s\n", bind_address, port, strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

/* accept() that backs off briefly on errors such as EMFILE instead of spinning. */
static int accept_client(int fd) {
  for (;;) {
    int client = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (client >= 0) return client;
    if (errno != EINTR && errno != ECONNABORTED) sleep_ms(50);
  }
}

static void *vnc_loop(void *arg) {
  int fd = (int)(long)arg;
  for (;;) {
    int client = accept_client(fd);
    write_all(client, "RFB 003.008\n", 12);
    close(client);
  }
  return NULL;
}

static void *exit_later(void *arg) {
  sleep_ms((long)arg);
  fprintf(stdout, "ptdemo exiting with code 3 (PT_EXIT_AFTER_MS)\n");
  fflush(stdout);
  _exit(3);
  return NULL;
}

/* As PID 1 in a container, signals without a handler are ignored: exit on SIGTERM/SIGINT ourselves. */
static void on_terminate(int signal_number) {
  (void)signal_number;
  _exit(0);
}

static int start_thread(void *(*run)(void *), void *arg) {
  pthread_t thread;
  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attributes, 256 * 1024);
  int failed = pthread_create(&thread, &attributes, run, arg);
  pthread_attr_destroy(&attributes);
  return failed;
}

static int serve(void) {
  started_ms = now_ms();
  struct sigaction action;
  memset(&action, 0, sizeof action);
  sigemptyset(&action.sa_mask);
  action.sa_handler = on_terminate;
  sigaction(SIGTERM, &action, NULL);
  sigaction(SIGINT, &action, NULL);
  action.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &action, NULL);

  const char *bind_address = env_string("PT_BIND", "0.0.0.0");
  long port = env_long("PT_PORT", 39000);
  long vnc_port = env_long("VNC_PORT", 5900);
  default_file = env_string("PT_DEFAULT_FILE", "/files/default.pkt");
  never_ready = strcmp(env_string("PT_NEVER_READY", ""), "1") == 0;
  reply_delay_ms = env_long("PT_PING_DELAY_MS", 0);
  if (reply_delay_ms < 0) reply_delay_ms = 0;
  long exit_after = env_long("PT_EXIT_AFTER_MS", 0);

  char reply[LINE_MAX_BYTES];
  if (load_file(default_file, 1, reply, sizeof reply) != 0) {
    /* Unreadable (not missing) default file: start anyway with nothing loaded, say why once. */
    fprintf(stdout, "ptdemo: %s\n", reply);
    snprintf(loaded, sizeof loaded, "%s", default_file);
    loaded_size = -1;
  }
  if (exit_after > 0) start_thread(exit_later, (void *)exit_after);
  sleep_ms(env_long("PT_START_DELAY_MS", 0));

  int fd = listen_on(bind_address, port);
  if (fd < 0) return 1;
  if (vnc_port > 0) {
    int vnc = listen_on(bind_address, vnc_port);
    if (vnc < 0) return 1;
    if (start_thread(vnc_loop, (void *)(long)vnc) != 0) return 1;
  }
  fprintf(stdout, "ptdemo listening on %s:%ld\n", bind_address, port);
  fflush(stdout);
  for (;;) {
    int client = accept_client(fd);
    if (start_thread(serve_connection, (void *)(long)client) != 0) close(client);
  }
}

/* Connects to host:port, giving up after timeout_ms. Returns the socket or -1 (errno set). */
static int connect_with_timeout(const struct sockaddr_in *address, long timeout_ms) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  if (connect(fd, (const struct sockaddr *)address, sizeof *address) != 0) {
    if (errno != EINPROGRESS) {
      int error = errno;
      close(fd);
      errno = error;
      return -1;
    }
    struct pollfd waiting = {fd, POLLOUT, 0};
    int ready = poll(&waiting, 1, (int)timeout_ms);
    int error = 0;
    socklen_t error_length = sizeof error;
    if (ready <= 0) error = ready == 0 ? ETIMEDOUT : errno;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &error_length) != 0) error = errno;
    if (error != 0) {
      close(fd);
      errno = error;
      return -1;
    }
  }
  return fd;
}

static int ctl(int argc, char **argv) {
  const char *host = "127.0.0.1";
  long port = env_long("PT_PORT", 39000);
  long timeout = 2000;
  int i = 2;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) host = argv[++i];
    else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) port = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) timeout = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    } else break;
  }
  if (i >= argc) {
    fprintf(stderr, "usage: ptdemo ctl [--host H] [--port N] [--timeout MS] COMMAND [ARGS...]\n");
    return 2;
  }
  if (timeout <= 0) timeout = 2000;
  if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  struct sockaddr_in address;
  memset(&address, 0, sizeof address);
  address.sin_family = AF_INET;
  address.sin_port = htons((uint16_t)port);
  if (port < 1 || port > 65535 || inet_pton(AF_INET, host, &address.sin_addr) != 1) {
    fprintf(stderr, "ptdemo ctl: bad address %s:%ld (need an IPv4 address and a port 1-65535)\n", host, port);
    return 1;
  }

  char line[LINE_MAX_BYTES];
  size_t used = 0;
  for (; i < argc && used < sizeof line - 2; i++) {
    int n = snprintf(line + used, sizeof line - 1 - used, "%s%s", used ? " " : "", argv[i]);
    used = n < 0 ? used : (used + (size_t)n >= sizeof line - 1 ? sizeof line - 2 : used + (size_t)n);
  }
  line[used++] = '\n';

  long long deadline = now_ms() + timeout;
  int fd = connect_with_timeout(&address, timeout);
  if (fd < 0) {
    fprintf(stderr, "ptdemo ctl: cannot connect to %s:%ld: %s\n", host, port, strerror(errno));
    return 1;
  }
  if (write_all(fd, line, used) != 0) {
    fprintf(stderr, "ptdemo ctl: cannot send to %s:%ld: %s\n", host, port, strerror(errno));
    close(fd);
    return 1;
  }
  char answer[LINE_MAX_BYTES + 1];
  size_t length = 0;
  while (length < sizeof answer - 1) {
    long long left = deadline - now_ms();
    if (left <= 0) break;
    struct pollfd waiting = {fd, POLLIN, 0};
    int ready = poll(&waiting, 1, (int)left);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) break;
    ssize_t got = recv(fd, answer + length, sizeof answer - 1 - length, 0);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got <= 0) break;
    length += (size_t)got;
    answer[length] = '\0';
    char *newline = memchr(answer, '\n', length);
    if (newline != NULL) {
      *newline = '\0';
      if (newline > answer && newline[-1] == '\r') newline[-1] = '\0';
      close(fd);
      puts(answer);
      fflush(stdout);
      if (strncmp(answer, "ERR", 3) == 0) {
        fprintf(stderr, "ptdemo ctl: the app answered with an error\n");
        return 1;
      }
      return 0;
    }
  }
  close(fd);
  fprintf(stderr, "ptdemo ctl: no answer from %s:%ld within %ld ms\n", host, port, timeout);
  return 1;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "ctl") == 0) return ctl(argc, argv);
  if (argc > 2 || (argc == 2 && strcmp(argv[1], "serve") != 0)) {
    fprintf(stderr, "usage: ptdemo [serve] | ptdemo ctl [--host H] [--port N] [--timeout MS] COMMAND [ARGS...]\n");
    return 2;
  }
  return serve();
}
