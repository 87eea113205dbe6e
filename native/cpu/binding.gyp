{
  "targets": [
    {
      "target_name": "lowbit_cpu",
      "sources": [
        "addon.cc",
        "pool.cc",
        "dispatch.cc",
        "gemm.cc",
        "int8.cc",
        "linalg.cc",
        "awq.cc",
        "ops.cc",
        "kernels_scalar.cc",
        "kernels_avx2.cc",
        "kernels_avx512.cc",
        "kernels_neon.cc",
        "roofline.cc",
        "train.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions", "-O2", "-O0"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-O2", "-O0"],
      "cflags": ["-O3", "-fno-math-errno"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fno-math-errno"],
      "conditions": [
        ["OS=='linux'", { "libraries": ["-lpthread"] }],
        ["OS=='mac'", {
          "xcode_settings": {
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "GCC_OPTIMIZATION_LEVEL": "3"
          }
        }]
      ]
    }
  ]
}
