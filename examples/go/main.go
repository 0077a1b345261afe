// A Go client of launch-gateway: a health check, an endpoint lookup, a sync call, a stream, an
// async task, and a call the gateway refuses, whose rich error details it reads.
//
// The stubs come from protos/ with the protoc command in docs/other-languages.md, into gen/go under
// this module's path; the endpoints it calls (echo, count, echo-async) are the local Launch
// server's built-in examples. See README.md to build and run it.
//
//	go-client [-key KEY] [-refuse ENDPOINT] HOST:PORT
//
// With a key (-key, or $LAUNCH_GATEWAY_API_KEY) every call sends `authorization: Bearer <key>`,
// which names the caller's tenant. Each result is one line on stdout; a failed step prints its
// status and details and ends the program with exit code 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	gatewaypb "github.com/your-org/your-service/gen/go/launch_gateway/v1"
)

const callTimeout = 10 * time.Second // every call has a deadline: the gateway bounds Launch's by it

// bearer sends the tenant's key with every call, health checks included.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false so that the example runs against a plaintext local gateway;
// a real deployment serves TLS and this should say true.
func (bearer) RequireTransportSecurity() bool { return false }

func main() {
	key := flag.String("key", os.Getenv("LAUNCH_GATEWAY_API_KEY"), "the tenant's key, sent as `authorization: Bearer <key>`")
	refuse := flag.String("refuse", "no-such-endpoint", "the endpoint of the last Predict, which the gateway is expected to refuse")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: go-client [-key KEY] [-refuse ENDPOINT] HOST:PORT")
		os.Exit(2)
	}

	// grpc.WithInsecure: plaintext, as the local gateway serves; newer grpc-go spells it
	// grpc.WithTransportCredentials(insecure.NewCredentials()), which Debian's 1.33 lacks.
	options := []grpc.DialOption{grpc.WithInsecure()}
	if *key != "" {
		options = append(options, grpc.WithPerRPCCredentials(bearer(*key)))
	}
	conn, err := grpc.Dial(flag.Arg(0), options...)
	if err != nil {
		fail("dial", err)
	}
	defer conn.Close()
	client := gatewaypb.NewEndpointServiceClient(conn)

	checkHealth(grpc_health_v1.NewHealthClient(conn))
	getEndpoint(client)
	predict(client)
	streamPredict(client)
	submitAndWait(client)
	if !refused(client, *refuse) {
		os.Exit(1)
	}
}

func withDeadline() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

// args builds a google.protobuf.Struct; integral numbers reach the model as integers.
func args(fields map[string]interface{}) *gatewaypb.EndpointRequest {
	s, err := structpb.NewStruct(fields)
	if err != nil {
		fail("args", err)
	}
	return &gatewaypb.EndpointRequest{Input: &gatewaypb.EndpointRequest_Args{Args: s}}
}

func checkHealth(health grpc_health_v1.HealthClient) {
	ctx, cancel := withDeadline()
	defer cancel()
	// "" is the whole server: SERVING once the gateway can reach Launch.
	reply, err := health.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: ""})
	if err != nil {
		fail("health", err)
	}
	fmt.Printf("health: %s\n", reply.GetStatus())
}

func getEndpoint(client gatewaypb.EndpointServiceClient) {
	ctx, cancel := withDeadline()
	defer cancel()
	reply, err := client.GetEndpoint(ctx, &gatewaypb.GetEndpointRequest{EndpointName: "echo"})
	if err != nil {
		fail("endpoint", err)
	}
	e := reply.GetEndpoint()
	fmt.Printf("endpoint: %s %s %s %s\n", e.GetName(), e.GetKind(), e.GetStatus(), e.GetId())
}

func predict(client gatewaypb.EndpointServiceClient) {
	ctx, cancel := withDeadline()
	defer cancel()
	reply, err := client.Predict(ctx, &gatewaypb.PredictRequest{
		EndpointName: "echo",
		Request:      args(map[string]interface{}{"text": "hello from go", "n": 3}),
	})
	if err != nil {
		fail("sync", err)
	}
	// result is JSON text of the model's return value; a model's failure is TASK_STATUS_FAILURE here.
	r := reply.GetResponse()
	fmt.Printf("sync: %s %s\n", r.GetStatus(), r.GetResult())
}

func streamPredict(client gatewaypb.EndpointServiceClient) {
	ctx, cancel := withDeadline()
	defer cancel() // leaving early cancels the call, and the gateway stops the upstream stream
	stream, err := client.StreamPredict(ctx, &gatewaypb.StreamPredictRequest{
		EndpointName: "count",
		Request:      args(map[string]interface{}{"n": 4, "interval": 0.05}),
	})
	if err != nil {
		fail("stream", err)
	}
	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fail("stream", err) // the events already printed stand
		}
		fmt.Printf("stream event: %s\n", event.GetResponse().GetResult())
	}
	fmt.Println("stream end")
}

func submitAndWait(client gatewaypb.EndpointServiceClient) {
	ctx, cancel := withDeadline()
	defer cancel()
	submitted, err := client.SubmitAsync(ctx, &gatewaypb.SubmitAsyncRequest{
		EndpointName: "echo-async",
		Request:      args(map[string]interface{}{"delay": 0.1, "x": 1}),
	})
	if err != nil {
		fail("async", err)
	}
	// WaitAsyncTask answers when the task ends, or with the last status it saw when its timeout
	// passes: ask again until the status is terminal, within a bound of our own.
	giveUp := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := withDeadline()
		reply, err := client.WaitAsyncTask(ctx, &gatewaypb.WaitAsyncTaskRequest{
			TaskId:  submitted.GetTaskId(),
			Timeout: durationpb.New(5 * time.Second),
		})
		cancel()
		if err != nil {
			fail("async", err)
		}
		r := reply.GetResponse()
		switch r.GetStatus() {
		case gatewaypb.TaskStatus_TASK_STATUS_PENDING, gatewaypb.TaskStatus_TASK_STATUS_STARTED:
			if time.Now().After(giveUp) {
				fmt.Printf("async: %s still %s\n", submitted.GetTaskId(), r.GetStatus())
				os.Exit(1)
			}
			continue
		}
		fmt.Printf("async: %s %s %s\n", submitted.GetTaskId(), r.GetStatus(), r.GetResult())
		return
	}
}

// refused makes a call the gateway should refuse and prints its status and rich details; it says
// whether the call was refused.
func refused(client gatewaypb.EndpointServiceClient, endpoint string) bool {
	ctx, cancel := withDeadline()
	defer cancel()
	_, err := client.Predict(ctx, &gatewaypb.PredictRequest{
		EndpointName: endpoint,
		Request:      args(map[string]interface{}{"n": 1}),
	})
	if err == nil {
		fmt.Printf("refused: OK (%s answered)\n", endpoint)
		return false
	}
	printStatus("refused", err)
	return true
}

// printStatus prints the call's code and message, then one line per rich error detail: they travel
// in the grpc-status-details-bin trailer, and status.FromError(err).Details() decodes them.
func printStatus(step string, err error) {
	st, _ := status.FromError(err)
	fmt.Printf("%s: %s %s\n", step, st.Code(), st.Message())
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			fmt.Printf("detail: ErrorInfo reason=%s domain=%s metadata=%s\n", d.GetReason(), d.GetDomain(), pairs(d.GetMetadata()))
		case *errdetails.RetryInfo:
			// Wait this long before retrying (the retry-after trailer says it in whole seconds).
			fmt.Printf("detail: RetryInfo retry_delay=%.3fs\n", d.GetRetryDelay().AsDuration().Seconds())
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				fmt.Printf("detail: BadRequest field=%s description=%s\n", v.GetField(), v.GetDescription())
			}
		case error: // a detail of a type this program does not link
			fmt.Printf("detail: unreadable (%v)\n", d)
		default:
			fmt.Printf("detail: %T\n", d)
		}
	}
}

func pairs(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

func fail(step string, err error) {
	if _, ok := status.FromError(err); ok {
		printStatus(step, err)
	} else {
		fmt.Printf("%s: %v\n", step, err)
	}
	os.Exit(1)
}
