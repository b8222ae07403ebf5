# bench/nginx-lib.sh: the nginx parts that bench/http.sh and bench/miss-ab.sh share, sourced by
# them, so that both measure against the same nginx.

# nginx_head DIR NAME: the start of every nginx configuration of the benchmarks, up to and
# including "http {": as many workers as cores, the pid and error log NAME.pid and
# NAME-error.log in DIR, no access log, and keep-alive for a whole run.
nginx_head() {
  cat <<NGINX
worker_processes auto;
pid $1/$2.pid;
error_log $1/$2-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  # The default (1000) closes load generators' connections mid-run; h2load does not reconnect.
  keepalive_requests 10000000;
NGINX
}

# nginx_static_origin DIR ADDRESS: starts the static-file origin of the unique-URL miss cases
# (issue 15), its own nginx instance on ADDRESS: two random files, served for any
# /u/<anything>/1k and /u/<anything>/16k with Cache-Control so that every cache stores them,
# and its request counter at /_status. Its files, configuration, pid and log are in DIR.
nginx_static_origin() {
  local dir=$1 addr=$2
  chmod 755 "$dir" # nginx workers run as an unprivileged user: let them into the directory.
  mkdir -p "$dir/static"
  head -c 1024 /dev/urandom >"$dir/static/1k"
  head -c 16384 /dev/urandom >"$dir/static/16k"
  chmod 755 "$dir/static"
  chmod 644 "$dir/static/1k" "$dir/static/16k"
  cat >"$dir/nginx-static.conf" <<NGINX
$(nginx_head "$dir" nginx-static)
  default_type application/octet-stream;
  server {
    listen $addr;
    root $dir/static;
    location ~ ^/u/[^/]+/(1k|16k)\$ {
      try_files /\$1 =404;
      add_header Cache-Control "max-age=3600";
    }
    # Its request counter: how many requests the caches sent it.
    location = /_status { stub_status; }
  }
}
NGINX
  nginx -c "$dir/nginx-static.conf" -p "$dir"
}

# nginx_cache_location UPSTREAM: nginx's proxy_cache location for an upstream block: the
# cache zone "bench", one fill per key at a time (proxy_cache_lock), answers held in memory.
nginx_cache_location() {
  cat <<NGINX
    location / {
      proxy_pass http://$1;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_cache bench;
      proxy_cache_lock on;
      proxy_buffers 16 64k;
      proxy_max_temp_file_size 0;
      add_header X-Cache-Status \$upstream_cache_status;
    }
NGINX
}
