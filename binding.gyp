{
  "targets": [
    {
      "target_name": "dvs",
      "sources": [
        "native/core/arena.cc",
        "native/core/capi.cc",
        "native/core/doorbell.cc",
        "native/core/endpoint_table.cc",
        "native/core/errors.cc",
        "native/core/messaging.cc",
        "native/core/node.cc",
        "native/core/proc_table.cc",
        "native/core/reaper.cc",
        "native/core/slab.cc",
        "native/net/crc32c.cc",
        "native/net/fault.cc",
        "native/net/recv_channel.cc",
        "native/net/send_channel.cc",
        "native/net/transport.cc",
        "native/net/udp_socket.cc",
        "native/net/wire.cc",
        "native/engine/engine.cc",
        "native/addon/addon.cc",
        "native/addon/native_engine.cc",
        "native/addon/native_node.cc"
      ],
      "include_dirs": ["<!@(node -p \"require('node-addon-api').include\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O2", "-fno-strict-aliasing", "-Wno-missing-field-initializers"],
      "libraries": ["-lrt", "-pthread"]
    }
  ]
}
