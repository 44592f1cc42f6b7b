{
  "targets": [
    {
      "target_name": "qmigd_native",
      "sources": ["src/unix_reader.c", "src/ram_advice.c", "src/fd_dup.c", "src/ram_map.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
