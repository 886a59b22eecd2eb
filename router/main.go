// agentworld-router: the gateway's data plane.
//
// The Python gateway (agentworld.gateway) decides: it places sessions, health-checks backends and knows which
// backend holds which node id. Forwarding every call through Python costs about 0.6 ms of CPU per call, so the
// gateway starts this process on its public port and keeps a private loopback port for itself. Here, a call
// bound to a session whose id names a node in the routing table goes straight to that backend, as raw bytes;
// every other call (placement, fan-outs, health, reflection, and any session this table cannot route) is proxied
// unchanged to the Python gateway, which answers it with the full rules.
//
// The gateway drives this process through pipes: it writes its routing table and tokens as JSON lines to stdin
// (see update), and reads events from stdout: {"listening": "host:port"} once, then {"suspect": address} when a
// backend call failed as unreachable. When stdin closes (the gateway is gone) the router exits.
package main

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// update is one line the gateway writes on stdin: the whole current state, replacing the previous one.
type update struct {
	Service      string            `json:"service"`       // "agentworld.v1.EnvService"
	Routed       []string          `json:"routed"`        // methods bound to a session (session_id is field 1)
	Resendable   []string          `json:"resendable"`    // methods safe to send again (CallTool: by call id)
	Nodes        map[string]string `json:"nodes"`         // node id -> backend address, live backends only
	Tokens       []string          `json:"tokens"`        // accepted bearer tokens; empty: no authentication
	BackendToken string            `json:"backend_token"` // presented to backends; empty: none
	AuthKey      string            `json:"auth_key"`      // metadata key of the token ("authorization")
	Scheme       string            `json:"scheme"`        // "Bearer"
	Separator    string            `json:"separator"`     // between a session id's local part and its node ("@")
	ExemptPrefix []string          `json:"exempt"`        // method prefixes that need no token (health checks)
	MaxMessage   int               `json:"max_message_bytes"`
}

type table struct {
	update
	routed     map[string]bool // full method names
	resendable map[string]bool
}

// frame is a message as bytes: the router never decodes what it forwards.
type frame struct{ b []byte }

// codecV2 passes frames through as they are (named "proto", so peers see the usual content type).
type codecV2 struct{}

func (codecV2) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(*frame).b)}, nil
}

func (codecV2) Unmarshal(data mem.BufferSlice, v any) error {
	v.(*frame).b = data.Materialize()
	return nil
}

func (codecV2) Name() string { return "proto" }

// grpcConnectParams reconnects quickly after a backend restart (gRPC's default first backoff is 1 s).
func grpcConnectParams() grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: 2 * time.Second,
	}
}

type router struct {
	table   atomic.Pointer[table]
	control *grpc.ClientConn
	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn
	events  chan map[string]string
}

func (r *router) backend(address string) (*grpc.ClientConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.conns[address]; ok {
		return c, nil
	}
	c, err := dial(address, r.table.Load().MaxMessage)
	if err != nil {
		return nil, err
	}
	r.conns[address] = c
	return c, nil
}

// forget closes connections to backends no longer in the table.
func (r *router) forget(t *table) {
	live := map[string]bool{}
	for _, a := range t.Nodes {
		live[a] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for a, c := range r.conns {
		if !live[a] {
			c.Close()
			delete(r.conns, a)
		}
	}
}

func dial(address string, maxMessage int) (*grpc.ClientConn, error) {
	return grpc.NewClient(address,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codecV2{}), grpc.MaxCallRecvMsgSize(maxMessage),
			grpc.MaxCallSendMsgSize(maxMessage)),
		grpc.WithConnectParams(grpcConnectParams()),
	)
}

// sessionID reads field 1 (session_id) of a routed request without decoding the rest.
func sessionID(b []byte) string {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return ""
			}
			return string(v)
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return ""
		}
		b = b[m:]
	}
	return ""
}

func (t *table) authorized(md metadata.MD, method string) bool {
	if len(t.Tokens) == 0 {
		return true
	}
	for _, p := range t.ExemptPrefix {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	for _, v := range md.Get(t.AuthKey) {
		scheme, presented, ok := strings.Cut(v, " ")
		if !ok || !strings.EqualFold(scheme, t.Scheme) {
			continue
		}
		presented = strings.TrimSpace(presented)
		for _, tok := range t.Tokens {
			if subtle.ConstantTimeCompare([]byte(presented), []byte(tok)) == 1 {
				return true
			}
		}
	}
	return false
}

// handle serves every call: the fast path for routable session calls, the control plane for the rest.
func (r *router) handle(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	t := r.table.Load()
	md, _ := metadata.FromIncomingContext(stream.Context())
	if !t.routed[method] {
		return r.proxy(stream, method, md, r.control)
	}
	var req frame
	if err := stream.RecvMsg(&req); err != nil {
		return err
	}
	sid := sessionID(req.b)
	_, node, found := cut(sid, t.Separator)
	address, live := t.Nodes[node]
	if !found || !live {
		return r.unaryTo(stream, method, md, r.control, &req, "") // the gateway answers with its full rules
	}
	if !t.authorized(md, method) {
		return r.unaryTo(stream, method, md, r.control, &req, "") // ... including UNAUTHENTICATED
	}
	conn, err := r.backend(address)
	if err != nil {
		return status.Errorf(codes.Unavailable, "backend %s: %v", address, err)
	}
	out := md.Copy()
	out.Delete(t.AuthKey)
	if t.BackendToken != "" {
		out.Set(t.AuthKey, t.Scheme+" "+t.BackendToken)
	}
	err = r.unaryTo(stream, method, out, conn, &req, address)
	if closedUnder(err, stream) { // the backend was removed mid-call: the gateway says the session was lost
		return r.unaryTo(stream, method, md, r.control, &req, "")
	}
	if unreachable(err, stream) {
		r.emit(map[string]string{"suspect": address, "detail": status.Convert(err).Message()})
		if t.resendable[method] { // the gateway checks the backend now and answers for it (or says it is lost)
			return r.unaryTo(stream, method, md, r.control, &req, "")
		}
	}
	return err
}

func unreachable(err error, stream grpc.ServerStream) bool {
	return err != nil && status.Code(err) == codes.Unavailable && stream.Context().Err() == nil
}

// closedUnder: the call failed because forget closed its backend connection, not because its caller gave up.
func closedUnder(err error, stream grpc.ServerStream) bool {
	return err != nil && status.Code(err) == codes.Canceled && stream.Context().Err() == nil
}

func cut(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i <= 0 || sep == "" {
		return "", "", false
	}
	return s[:i], s[i+len(sep):], true
}

// unaryTo forwards one request and its reply, with headers, trailers and status passed through (nothing is sent
// back on an UNAVAILABLE from a backend, so the caller may still send the request elsewhere).
func (r *router) unaryTo(stream grpc.ServerStream, method string, md metadata.MD, conn *grpc.ClientConn, req *frame,
	backend string) error {
	ctx := metadata.NewOutgoingContext(stream.Context(), md)
	var resp frame
	var header, trailer metadata.MD
	err := conn.Invoke(ctx, method, req, &resp, grpc.Header(&header), grpc.Trailer(&trailer))
	if backend != "" && (unreachable(err, stream) || closedUnder(err, stream)) {
		return err // nothing sent yet: the caller answers from elsewhere
	}
	if len(header) > 0 {
		stream.SetHeader(header)
	}
	stream.SetTrailer(trailer)
	if err != nil {
		return err
	}
	return stream.SendMsg(&resp)
}

// proxy relays a call of any shape (unary, streaming: reflection) to the control plane.
func (r *router) proxy(stream grpc.ServerStream, method string, md metadata.MD, conn *grpc.ClientConn) error {
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(stream.Context(), md))
	defer cancel()
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	up, err := conn.NewStream(ctx, desc, method)
	if err != nil {
		return err
	}
	sent := make(chan error, 1)
	go func() {
		for {
			var f frame
			if err := stream.RecvMsg(&f); err != nil {
				if errors.Is(err, io.EOF) {
					sent <- up.CloseSend()
				} else {
					sent <- err
				}
				return
			}
			if err := up.SendMsg(&f); err != nil {
				sent <- nil // the reply side reports why
				return
			}
		}
	}()
	if h, err := up.Header(); err == nil && len(h) > 0 {
		stream.SetHeader(h)
	}
	for {
		var f frame
		if err := up.RecvMsg(&f); err != nil {
			stream.SetTrailer(up.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := stream.SendMsg(&f); err != nil {
			return err
		}
	}
}

func (r *router) emit(event map[string]string) {
	select {
	case r.events <- event:
	default: // never block a call on the gateway reading its pipe
	}
}

func (r *router) writeEvents(out io.Writer) {
	enc := json.NewEncoder(out)
	for e := range r.events {
		if err := enc.Encode(e); err != nil {
			return
		}
	}
}

func (r *router) readUpdates(in io.Reader) error {
	scanner := bufio.NewScanner(in)
	scanner.Buffer(make([]byte, 1<<20), 64<<20)
	for scanner.Scan() {
		var u update
		if err := json.Unmarshal(scanner.Bytes(), &u); err != nil {
			return fmt.Errorf("bad update from the gateway: %w", err)
		}
		t := &table{update: u, routed: map[string]bool{}, resendable: map[string]bool{}}
		for _, m := range u.Routed {
			t.routed["/"+u.Service+"/"+m] = true
		}
		for _, m := range u.Resendable {
			t.resendable["/"+u.Service+"/"+m] = true
		}
		r.table.Store(t)
		r.forget(t)
	}
	return scanner.Err()
}

func main() {
	listen := flag.String("listen", "127.0.0.1:50050", "public address (host:port, port 0 picks one)")
	control := flag.String("control", "", "the Python gateway's private address")
	flag.Parse()
	log.SetPrefix("agentworld-router: ")
	log.SetFlags(log.LstdFlags)

	r := &router{conns: map[string]*grpc.ClientConn{}, events: make(chan map[string]string, 1024)}
	in := bufio.NewReader(os.Stdin)
	first, err := in.ReadBytes('\n')
	if err != nil {
		log.Fatalf("no routing table on stdin: %v", err)
	}
	if err := r.readUpdates(strings.NewReader(string(first))); err != nil {
		log.Fatal(err)
	}
	maxMessage := r.table.Load().MaxMessage
	if r.control, err = dial(*control, maxMessage); err != nil {
		log.Fatalf("control plane %s: %v", *control, err)
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("cannot listen on %s: %v", *listen, err)
	}
	server := grpc.NewServer(
		grpc.ForceServerCodecV2(codecV2{}),
		grpc.UnknownServiceHandler(r.handle),
		grpc.MaxRecvMsgSize(maxMessage),
		grpc.MaxSendMsgSize(maxMessage),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second,
			PermitWithoutStream: true}),
	)
	go r.writeEvents(os.Stdout)
	r.emit(map[string]string{"listening": lis.Addr().String()})
	go func() {
		if err := r.readUpdates(in); err != nil {
			log.Print(err)
		}
		server.Stop() // stdin closed: the gateway is gone
		os.Exit(0)
	}()
	if err := server.Serve(lis); err != nil {
		log.Fatal(err)
	}
}
