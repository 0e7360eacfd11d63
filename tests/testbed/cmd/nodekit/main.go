// Command nodekit holds the small programs the testbed's real nodes need,
// chosen by the first argument. It uses the standard library only and is
// built static, so that it can be the whole content of an image.
//
//	nodekit pause
//	    the pod sandbox's process: waits for SIGTERM or SIGINT, and reaps
//	    children (the pause image's entrypoint)
//	nodekit serve [-listen :8080] [-depends URL]... [-self PATH]
//	    answers 200 on every path while each depends-on URL answers 2xx,
//	    and 503 naming the first one that does not (the serving image).
//	    The depends-on URLs are the -depends flags and every http:// value
//	    of an environment variable named *_URL (LOGIN_URL=http://...), as an
//	    application carries its dependencies. PATH (-self) answers 200
//	    while the process runs, without asking them: a readiness probe that
//	    does not follow a dependency down
//	nodekit connect -listen UNIX-SOCKET -allow CIDR
//	    an HTTP CONNECT proxy on a unix socket that dials only addresses in
//	    CIDR: the API server's way to the kubelets (its egress selector)
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: nodekit pause | serve [-listen ADDR] [-depends URL]... | connect -listen SOCKET -allow CIDR")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pause":
		pause()
	case "serve":
		serve(os.Args[2:])
	case "connect":
		connect(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "nodekit: unknown program %q\n", os.Args[1])
		os.Exit(2)
	}
}

func pause() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", ":8080", "address to listen on")
	var depends list
	fs.Var(&depends, "depends", "a URL that must answer 2xx for this one to answer 200 (repeatable)")
	self := fs.String("self", "", "a path answered 200 without asking the depends-on URLs")
	fs.Parse(args) //nolint:errcheck
	depends = append(depends, envURLs(os.Environ())...)
	client := &http.Client{Timeout: 2 * time.Second}
	host, _ := os.Hostname()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if *self != "" && r.URL.Path == *self {
			fmt.Fprintf(w, "%s: running\n", host)
			return
		}
		for _, u := range depends {
			resp, err := client.Get(u)
			if err == nil {
				io.Copy(io.Discard, resp.Body) //nolint:errcheck
				resp.Body.Close()
			}
			if err != nil || resp.StatusCode/100 != 2 {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "%s: depends on %s, which does not answer\n", host, u)
				return
			}
		}
		fmt.Fprintf(w, "%s: ok\n", host)
	})
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		srv.Shutdown(context.Background()) //nolint:errcheck
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}

// envURLs: the http:// values of the variables named *_URL, in the
// environment's order.
func envURLs(env []string) []string {
	var out []string
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasSuffix(k, "_URL") && strings.HasPrefix(v, "http://") {
			out = append(out, v)
		}
	}
	return out
}

func connect(args []string) {
	fs := flag.NewFlagSet("connect", flag.ExitOnError)
	listen := fs.String("listen", "", "unix socket to listen on")
	allow := fs.String("allow", "", "the only network (CIDR) it dials into")
	fs.Parse(args) //nolint:errcheck
	_, allowed, err := net.ParseCIDR(*allow)
	if err != nil || *listen == "" {
		fmt.Fprintln(os.Stderr, "connect: -listen SOCKET and -allow CIDR are required")
		os.Exit(2)
	}
	os.Remove(*listen) //nolint:errcheck
	l, err := net.Listen("unix", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "connect:", err)
			os.Exit(1)
		}
		go tunnel(c, allowed)
	}
}

func tunnel(c net.Conn, allowed *net.IPNet) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect {
		fmt.Fprint(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
		return
	}
	host, _, err := net.SplitHostPort(req.Host)
	ip := net.ParseIP(host)
	if err != nil || ip == nil || !allowed.Contains(ip) {
		fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\n\r\n%s is outside %s\n", req.Host, allowed)
		return
	}
	up, err := net.DialTimeout("tcp", req.Host, 5*time.Second)
	if err != nil {
		fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n%v\n", err)
		return
	}
	defer up.Close()
	fmt.Fprint(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(up, br); up.(*net.TCPConn).CloseWrite() }() //nolint:errcheck
	go func() { defer wg.Done(); io.Copy(c, up); c.(*net.UnixConn).CloseWrite() }()  //nolint:errcheck
	wg.Wait()
}
