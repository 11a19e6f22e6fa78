# locabus_bpf_skeleton(<name> SOURCE <file.bpf.c> [INCLUDES dir...] [DEPENDS target...])
#
# Compiles <file.bpf.c> with clang -target bpf -O2 -g into <name>.bpf.o
# (clang writes a depfile, so editing any included header rebuilds it),
# strips DWARF (BTF stays), generates <name>.skel.h with
# `bpftool gen skeleton`, and defines INTERFACE target <name>_skel whose
# include path holds the skeleton. Link <name>_skel to use it.

find_program(BPF_CLANG NAMES clang-14 clang REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)
find_program(LLVM_STRIP NAMES llvm-strip-14 llvm-strip)

# Kernel UAPI headers live under the multiarch directory (asm/types.h).
if(CMAKE_LIBRARY_ARCHITECTURE)
  set(LOCABUS_BPF_SYS_INCLUDE /usr/include/${CMAKE_LIBRARY_ARCHITECTURE})
else()
  set(LOCABUS_BPF_SYS_INCLUDE /usr/include/${CMAKE_SYSTEM_PROCESSOR}-linux-gnu)
endif()

function(locabus_bpf_skeleton name)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "SOURCE" "INCLUDES;DEPENDS")
  if(NOT ARG_SOURCE)
    message(FATAL_ERROR "locabus_bpf_skeleton(${name}): SOURCE is required")
  endif()
  get_filename_component(src ${ARG_SOURCE} ABSOLUTE)
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/${name})
  set(obj ${out_dir}/${name}.bpf.o)
  set(dep ${out_dir}/${name}.bpf.d)
  set(skel ${out_dir}/${name}.skel.h)
  file(MAKE_DIRECTORY ${out_dir})

  set(include_flags)
  foreach(dir IN LISTS ARG_INCLUDES)
    list(APPEND include_flags -I${dir})
  endforeach()

  set(strip_cmd)
  if(LLVM_STRIP)
    set(strip_cmd COMMAND ${LLVM_STRIP} -g ${obj})
  endif()

  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${BPF_CLANG} -target bpf -O2 -g -mcpu=v3 -Wall -Wextra -Werror
            ${include_flags} -idirafter ${LOCABUS_BPF_SYS_INCLUDE}
            -MD -MF ${dep} -MT ${obj} -c ${src} -o ${obj}
    ${strip_cmd}
    DEPENDS ${src} ${ARG_DEPENDS}
    DEPFILE ${dep}
    COMMENT "BPF ${name}: clang -target bpf"
    VERBATIM)

  add_custom_command(
    OUTPUT ${skel}
    COMMAND sh -c "${BPFTOOL} gen skeleton '${obj}' name '${name}' > '${skel}.tmp' && mv '${skel}.tmp' '${skel}'"
    DEPENDS ${obj}
    COMMENT "BPF ${name}: bpftool gen skeleton"
    VERBATIM)

  add_custom_target(${name}_skel_gen DEPENDS ${skel})
  add_library(${name}_skel INTERFACE)
  target_include_directories(${name}_skel SYSTEM INTERFACE ${out_dir})
  target_link_libraries(${name}_skel INTERFACE PkgConfig::LIBBPF PkgConfig::LIBELF ZLIB::ZLIB)
  add_dependencies(${name}_skel ${name}_skel_gen)
  set_target_properties(${name}_skel PROPERTIES LOCABUS_BPF_OBJECT ${obj})
endfunction()
