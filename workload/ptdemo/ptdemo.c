/*
 * ptdemo: a stand-in for Packet Tracer with the behaviour pt-instance-manager relies on.
 * It listens on its IPC port, answers PING, loads a named file, reports what is loaded, and can be
 * told to be slow, to stop answering or to exit, so readiness failures can be exercised.
 *
 * Server:  ptdemo [serve]           (settings from the environment, see README.md)
 * Client:  ptdemo ctl [--host H] [--port N] [--timeout MS] COMMAND [ARGS...]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static char loaded[4096];
static long long loaded_size = -1;
static long resets = 0;
static int failing = 0;
static int never_ready = 0;
static long reply_delay_ms = 0;
static const char *default_file = "/files/default.pkt";
static struct timespec started;

static long env_long(const char *name, long fallback) {
  const char *value = getenv(name);
  if (value == NULL || *value == '\0') return fallback;
  return strtol(value, NULL, 10);
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

/* Loads path (must be a readable regular file unless allow_missing); writes the reply. */
static void load_file(const char *path, int allow_missing, char *reply, size_t size) {
  if (path[0] == '\0' || has_dotdot(path)) {
    snprintf(reply, size, "ERR bad path");
    return;
  }
  struct stat st;
  FILE *file = fopen(path, "rb");
  if (file == NULL || fstat(fileno(file), &st) != 0 || !S_ISREG(st.st_mode)) {
    int error = file == NULL ? errno : EISDIR;
    if (file != NULL) fclose(file);
    if (!allow_missing) {
      snprintf(reply, size, "ERR cannot load %s: %s", path, strerror(error));
      return;
    }
    pthread_mutex_lock(&state_lock);
    snprintf(loaded, sizeof loaded, "%s", path);
    loaded_size = -1;
    pthread_mutex_unlock(&state_lock);
    snprintf(reply, size, "OK %s -1", path);
    return;
  }
  fclose(file);
  pthread_mutex_lock(&state_lock);
  snprintf(loaded, sizeof loaded, "%s", path);
  loaded_size = (long long)st.st_size;
  pthread_mutex_unlock(&state_lock);
  snprintf(reply, size, "OK %s %lld", path, (long long)st.st_size);
}

static void status_json(char *out, size_t size) {
  pthread_mutex_lock(&state_lock);
  snprintf(out, size, "{\"loaded\":\"%s\",\"size\":%lld,\"resets\":%ld,\"pid\":%d,\"uptimeMs\":%lld,\"failing\":%s}", loaded,
           loaded_size, resets, (int)getpid(),
           now_ms() - ((long long)started.tv_sec * 1000 + started.tv_nsec / 1000000), failing ? "true" : "false");
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

static void reply_line(int fd, const char *line) {
  char buffer[8192];
  long delay;
  pthread_mutex_lock(&state_lock);
  delay = reply_delay_ms;
  pthread_mutex_unlock(&state_lock);
  sleep_ms(delay);
  int n = snprintf(buffer, sizeof buffer, "%s\n", line);
  write_all(fd, buffer, (size_t)n);
}

/* Handles one command line; returns 0 to keep the connection, -1 to close it. */
static int handle_command(int fd, char *line) {
  char reply[8192];
  char *command = line;
  while (*command == ' ') command++;
  char *argument = command;
  while (*argument && *argument != ' ') argument++;
  if (*argument) *argument++ = '\0';
  while (*argument == ' ') argument++;

  int is_failing;
  pthread_mutex_lock(&state_lock);
  is_failing = failing;
  pthread_mutex_unlock(&state_lock);
  if (never_ready) return 0;
  if (is_failing && strcasecmp(command, "HEAL") != 0) return 0;

  if (strcasecmp(command, "PING") == 0) {
    reply_line(fd, "PONG");
  } else if (strcasecmp(command, "LOAD") == 0) {
    load_file(argument, 0, reply, sizeof reply);
    reply_line(fd, reply);
  } else if (strcasecmp(command, "RESET") == 0) {
    load_file(default_file, 1, reply, sizeof reply);
    pthread_mutex_lock(&state_lock);
    resets++;
    pthread_mutex_unlock(&state_lock);
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
    long ms = strtol(argument, NULL, 10);
    pthread_mutex_lock(&state_lock);
    reply_delay_ms = ms < 0 ? 0 : ms;
    pthread_mutex_unlock(&state_lock);
    snprintf(reply, sizeof reply, "OK slow %ld", ms);
    reply_line(fd, reply);
  } else if (strcasecmp(command, "EXIT") == 0) {
    reply_line(fd, "OK exiting");
    exit((int)strtol(argument, NULL, 10));
  } else {
    reply_line(fd, "ERR unknown command");
  }
  return 0;
}

static void answer_http(int fd, char *buffered, size_t *length) {
  /* Skip headers until the empty line (or the connection ends). */
  for (;;) {
    buffered[*length] = '\0';
    if (strstr(buffered, "\r\n\r\n") || strstr(buffered, "\n\n")) break;
    if (*length >= 8000) break;
    ssize_t got = recv(fd, buffered + *length, 8000 - *length, 0);
    if (got <= 0) break;
    *length += (size_t)got;
  }
  char body[8192];
  char response[9000];
  status_json(body, sizeof body);
  int bad;
  pthread_mutex_lock(&state_lock);
  bad = failing || never_ready;
  pthread_mutex_unlock(&state_lock);
  int n = snprintf(response, sizeof response,
                   "HTTP/1.0 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                   bad ? "503 Service Unavailable" : "200 OK", strlen(body), body);
  write_all(fd, response, (size_t)n);
}

static void *serve_connection(void *arg) {
  int fd = (int)(long)arg;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char buffer[8192];
  size_t length = 0;
  int first = 1;
  for (;;) {
    ssize_t got = recv(fd, buffer + length, sizeof buffer - 1 - length, 0);
    if (got <= 0) break;
    length += (size_t)got;
    buffer[length] = '\0';
    if (first && length >= 4 && strncmp(buffer, "GET ", 4) == 0) {
      answer_http(fd, buffer, &length);
      break;
    }
    char *newline;
    while ((newline = memchr(buffer, '\n', length)) != NULL) {
      first = 0;
      *newline = '\0';
      size_t used = (size_t)(newline - buffer) + 1;
      if (newline > buffer && newline[-1] == '\r') newline[-1] = '\0';
      char line[8192];
      snprintf(line, sizeof line, "%s", buffer);
      memmove(buffer, buffer + used, length - used);
      length -= used;
      if (handle_command(fd, line) < 0) goto done;
    }
    if (length >= sizeof buffer - 1) break; /* line too long */
  }
done:
  close(fd);
  return NULL;
}

static int listen_on(const char *bind_address, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in address;
  memset(&address, 0, sizeof address);
  address.sin_family = AF_INET;
  address.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, bind_address, &address.sin_addr) != 1) return -1;
  if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0 || listen(fd, 128) != 0) {
    fprintf(stderr, "ptdemo: cannot listen on %s:%d: %s\n", bind_address, port, strerror(errno));
    return -1;
  }
  return fd;
}

static void *vnc_loop(void *arg) {
  int fd = (int)(long)arg;
  for (;;) {
    int client = accept(fd, NULL, NULL);
    if (client < 0) continue;
    write_all(client, "RFB 003.008\n", 12);
    close(client);
  }
  return NULL;
}

static void *exit_later(void *arg) {
  sleep_ms((long)arg);
  fprintf(stdout, "ptdemo: exiting with code 3 as told (PT_EXIT_AFTER_MS)\n");
  fflush(stdout);
  _exit(3);
  return NULL;
}

static void on_terminate(int signal_number) {
  (void)signal_number;
  _exit(0);
}

static void start_thread(void *(*run)(void *), void *arg) {
  pthread_t thread;
  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attributes, 256 * 1024);
  if (pthread_create(&thread, &attributes, run, arg) != 0) {
    if (run == serve_connection) close((int)(long)arg);
  }
  pthread_attr_destroy(&attributes);
}

static int serve(void) {
  clock_gettime(CLOCK_MONOTONIC, &started);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_terminate);
  signal(SIGINT, on_terminate);
  const char *bind_address = getenv("PT_BIND") && *getenv("PT_BIND") ? getenv("PT_BIND") : "0.0.0.0";
  int port = (int)env_long("PT_PORT", 39000);
  int vnc_port = (int)env_long("VNC_PORT", 5900);
  if (getenv("PT_DEFAULT_FILE") && *getenv("PT_DEFAULT_FILE")) default_file = getenv("PT_DEFAULT_FILE");
  never_ready = env_long("PT_NEVER_READY", 0) == 1;
  reply_delay_ms = env_long("PT_PING_DELAY_MS", 0);
  long exit_after = env_long("PT_EXIT_AFTER_MS", 0);
  char reply[8192];
  load_file(default_file, 1, reply, sizeof reply);
  if (exit_after > 0) start_thread(exit_later, (void *)exit_after);
  sleep_ms(env_long("PT_START_DELAY_MS", 0));

  int fd = listen_on(bind_address, port);
  if (fd < 0) return 1;
  if (vnc_port > 0) {
    int vnc = listen_on(bind_address, vnc_port);
    if (vnc < 0) return 1;
    start_thread(vnc_loop, (void *)(long)vnc);
  }
  fprintf(stdout, "ptdemo listening on %s:%d\n", bind_address, port);
  fflush(stdout);
  for (;;) {
    int client = accept(fd, NULL, NULL);
    if (client < 0) continue;
    start_thread(serve_connection, (void *)(long)client);
  }
}

static int ctl(int argc, char **argv) {
  const char *host = "127.0.0.1";
  int port = (int)env_long("PT_PORT", 39000);
  long timeout = 2000;
  int i = 2;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) host = argv[++i];
    else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) port = atoi(argv[++i]);
    else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) timeout = atol(argv[++i]);
    else break;
  }
  if (i >= argc) {
    fprintf(stderr, "usage: ptdemo ctl [--host H] [--port N] [--timeout MS] COMMAND [ARGS...]\n");
    return 2;
  }
  char line[8192] = "";
  size_t used = 0;
  for (; i < argc; i++) used += (size_t)snprintf(line + used, sizeof line - used, "%s%s", used ? " " : "", argv[i]);
  snprintf(line + used, sizeof line - used, "\n");

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in address;
  memset(&address, 0, sizeof address);
  address.sin_family = AF_INET;
  address.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, host, &address.sin_addr);
  if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
    fprintf(stderr, "ptdemo ctl: cannot connect to %s:%d: %s\n", host, port, strerror(errno));
    return 1;
  }
  write_all(fd, line, strlen(line));
  char answer[8192];
  size_t length = 0;
  long long deadline = now_ms() + timeout;
  while (length < sizeof answer - 1) {
    long long left = deadline - now_ms();
    if (left <= 0) break;
    struct pollfd waiting = {fd, POLLIN, 0};
    if (poll(&waiting, 1, (int)left) <= 0) break;
    ssize_t got = recv(fd, answer + length, sizeof answer - 1 - length, 0);
    if (got <= 0) break;
    length += (size_t)got;
    answer[length] = '\0';
    char *newline = strchr(answer, '\n');
    if (newline) {
      *newline = '\0';
      puts(answer);
      close(fd);
      return strncmp(answer, "ERR", 3) == 0 ? 1 : 0;
    }
  }
  close(fd);
  fprintf(stderr, "ptdemo ctl: no answer from %s:%d within %ld ms\n", host, port, timeout);
  return 1;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "ctl") == 0) return ctl(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "serve") != 0) {
    fprintf(stderr, "usage: ptdemo [serve] | ptdemo ctl [--host H] [--port N] [--timeout MS] COMMAND [ARGS...]\n");
    return 2;
  }
  return serve();
}
