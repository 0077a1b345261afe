// A Java client of launch-gateway: a health check, an endpoint lookup, a sync call, a stream, an
// async task, and a call the gateway refuses, whose rich error details it reads.
//
// The stubs come from protos/ with the protoc command in docs/other-languages.md (Java package
// launch_gateway.v1); the health stubs (io.grpc.health.v1) are grpc-services' and the detail
// classes (com.google.rpc) proto-google-common-protos'. README.md shows the build.
//
//   java GatewayClient [--key KEY] [--refuse ENDPOINT] HOST:PORT
//
// With a key (--key, or $LAUNCH_GATEWAY_API_KEY) every call sends `authorization: Bearer <key>`,
// which names the caller's tenant. Each result is one line on stdout; a failed step prints its
// status and details and ends the program with exit code 1.

import com.google.protobuf.Any;
import com.google.protobuf.Duration;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import io.grpc.ClientInterceptors;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.StatusRuntimeException;
import io.grpc.Channel;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.MetadataUtils;
import java.util.Iterator;
import java.util.Locale;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import launch_gateway.v1.EndpointServiceGrpc;
import launch_gateway.v1.EndpointServiceOuterClass.EndpointRequest;
import launch_gateway.v1.EndpointServiceOuterClass.EndpointResponse;
import launch_gateway.v1.EndpointServiceOuterClass.GetEndpointRequest;
import launch_gateway.v1.EndpointServiceOuterClass.PredictRequest;
import launch_gateway.v1.EndpointServiceOuterClass.StreamPredictRequest;
import launch_gateway.v1.EndpointServiceOuterClass.StreamPredictResponse;
import launch_gateway.v1.EndpointServiceOuterClass.SubmitAsyncRequest;
import launch_gateway.v1.EndpointServiceOuterClass.TaskStatus;
import launch_gateway.v1.EndpointServiceOuterClass.WaitAsyncTaskRequest;

public final class GatewayClient {
  private static final long DEADLINE_SECONDS = 10; // the gateway bounds Launch's call by it

  private final EndpointServiceGrpc.EndpointServiceBlockingStub gateway;
  private final HealthGrpc.HealthBlockingStub health;

  private GatewayClient(Channel channel) {
    gateway = EndpointServiceGrpc.newBlockingStub(channel);
    health = HealthGrpc.newBlockingStub(channel);
  }

  public static void main(String[] argv) throws InterruptedException {
    String key = System.getenv("LAUNCH_GATEWAY_API_KEY");
    String refuse = "no-such-endpoint";
    String address = null;
    for (int i = 0; i < argv.length; i++) {
      switch (argv[i]) {
        case "--key" -> key = argv[++i];
        case "--refuse" -> refuse = argv[++i];
        default -> address = argv[i];
      }
    }
    if (address == null) {
      System.err.println("usage: java GatewayClient [--key KEY] [--refuse ENDPOINT] HOST:PORT");
      System.exit(2);
    }
    // usePlaintext: the local gateway serves without TLS; a real deployment uses TLS.
    ManagedChannel channel = ManagedChannelBuilder.forTarget(address).usePlaintext().build();
    Channel calls = channel;
    if (key != null && !key.isEmpty()) {
      Metadata headers = new Metadata();
      headers.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + key);
      calls = ClientInterceptors.intercept(channel, MetadataUtils.newAttachHeadersInterceptor(headers));
    }
    boolean refused;
    try {
      GatewayClient client = new GatewayClient(calls);
      client.checkHealth();
      client.getEndpoint();
      client.predict();
      client.streamPredict();
      client.submitAndWait();
      refused = client.refused(refuse);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    System.exit(refused ? 0 : 1);
  }

  private EndpointServiceGrpc.EndpointServiceBlockingStub withDeadline() {
    return gateway.withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS);
  }

  // args: a google.protobuf.Struct; integral numbers reach the model as integers.
  private static EndpointRequest args(Object... pairs) {
    Struct.Builder struct = Struct.newBuilder();
    for (int i = 0; i < pairs.length; i += 2) {
      Value.Builder value = Value.newBuilder();
      if (pairs[i + 1] instanceof String s) {
        value.setStringValue(s);
      } else {
        value.setNumberValue(((Number) pairs[i + 1]).doubleValue());
      }
      struct.putFields((String) pairs[i], value.build());
    }
    return EndpointRequest.newBuilder().setArgs(struct).build();
  }

  private void checkHealth() {
    try {
      // "" is the whole server: SERVING once the gateway can reach Launch.
      var reply = health.withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS)
          .check(HealthCheckRequest.newBuilder().setService("").build());
      System.out.println("health: " + reply.getStatus());
    } catch (StatusRuntimeException e) {
      fail("health", e);
    }
  }

  private void getEndpoint() {
    try {
      var e = withDeadline().getEndpoint(GetEndpointRequest.newBuilder().setEndpointName("echo").build()).getEndpoint();
      System.out.printf("endpoint: %s %s %s %s%n", e.getName(), e.getKind(), e.getStatus(), e.getId());
    } catch (StatusRuntimeException e) {
      fail("endpoint", e);
    }
  }

  private void predict() {
    try {
      var request = PredictRequest.newBuilder().setEndpointName("echo").setRequest(args("text", "hello from java", "n", 3));
      // result is JSON text of the model's return value; a model's failure is TASK_STATUS_FAILURE here.
      EndpointResponse r = withDeadline().predict(request.build()).getResponse();
      System.out.printf("sync: %s %s%n", r.getStatus(), r.getResult());
    } catch (StatusRuntimeException e) {
      fail("sync", e);
    }
  }

  private void streamPredict() {
    try {
      var request = StreamPredictRequest.newBuilder().setEndpointName("count").setRequest(args("n", 4, "interval", 0.05));
      Iterator<StreamPredictResponse> events = withDeadline().streamPredict(request.build());
      while (events.hasNext()) {
        System.out.println("stream event: " + events.next().getResponse().getResult());
      }
      System.out.println("stream end");
    } catch (StatusRuntimeException e) {
      fail("stream", e); // the events already printed stand
    }
  }

  private void submitAndWait() {
    try {
      var submit = SubmitAsyncRequest.newBuilder().setEndpointName("echo-async").setRequest(args("delay", 0.1, "x", 1));
      String taskId = withDeadline().submitAsync(submit.build()).getTaskId();
      // WaitAsyncTask answers when the task ends, or with the last status it saw when its timeout
      // passes: ask again until the status is terminal, within a bound of our own.
      long giveUp = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
      var wait = WaitAsyncTaskRequest.newBuilder().setTaskId(taskId).setTimeout(Duration.newBuilder().setSeconds(5));
      while (true) {
        EndpointResponse r = withDeadline().waitAsyncTask(wait.build()).getResponse();
        boolean running = r.getStatus() == TaskStatus.TASK_STATUS_PENDING || r.getStatus() == TaskStatus.TASK_STATUS_STARTED;
        if (!running) {
          System.out.printf("async: %s %s %s%n", taskId, r.getStatus(), r.getResult());
          return;
        }
        if (System.nanoTime() > giveUp) {
          System.out.printf("async: %s still %s%n", taskId, r.getStatus());
          System.exit(1);
        }
      }
    } catch (StatusRuntimeException e) {
      fail("async", e);
    }
  }

  // refused makes a call the gateway should refuse and prints its status and rich details; it says
  // whether the call was refused.
  private boolean refused(String endpoint) {
    try {
      withDeadline().predict(PredictRequest.newBuilder().setEndpointName(endpoint).setRequest(args("n", 1)).build());
      System.out.printf("refused: OK (%s answered)%n", endpoint);
      return false;
    } catch (StatusRuntimeException e) {
      printStatus("refused", e);
      return true;
    }
  }

  // printStatus prints the call's code and message, then one line per rich error detail: they travel
  // in the grpc-status-details-bin trailer, and StatusProto.fromThrowable decodes them.
  private static void printStatus(String step, StatusRuntimeException e) {
    System.out.printf("%s: %s %s%n", step, e.getStatus().getCode(), e.getStatus().getDescription());
    com.google.rpc.Status status = StatusProto.fromThrowable(e);
    if (status == null) {
      return;
    }
    for (Any detail : status.getDetailsList()) {
      try {
        if (detail.is(ErrorInfo.class)) {
          ErrorInfo info = detail.unpack(ErrorInfo.class);
          var metadata = new StringBuilder();
          new TreeMap<>(info.getMetadataMap()).forEach((k, v) -> metadata.append(metadata.isEmpty() ? "" : ",").append(k).append('=').append(v));
          System.out.printf("detail: ErrorInfo reason=%s domain=%s metadata=%s%n", info.getReason(), info.getDomain(), metadata);
        } else if (detail.is(RetryInfo.class)) {
          // Wait this long before retrying (the retry-after trailer says it in whole seconds).
          Duration delay = detail.unpack(RetryInfo.class).getRetryDelay();
          System.out.printf(Locale.ROOT, "detail: RetryInfo retry_delay=%.3fs%n", delay.getSeconds() + delay.getNanos() / 1e9);
        } else if (detail.is(BadRequest.class)) {
          for (var v : detail.unpack(BadRequest.class).getFieldViolationsList()) {
            System.out.printf("detail: BadRequest field=%s description=%s%n", v.getField(), v.getDescription());
          }
        } else {
          System.out.println("detail: " + detail.getTypeUrl());
        }
      } catch (InvalidProtocolBufferException unreadable) {
        System.out.printf("detail: unreadable (%s)%n", unreadable.getMessage());
      }
    }
  }

  private static void fail(String step, StatusRuntimeException e) {
    printStatus(step, e);
    System.exit(1);
  }
}
