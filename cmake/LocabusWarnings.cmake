# Strict warnings for code we own. Generated skeleton headers are included as
# SYSTEM headers. (No -Wold-style-cast: include/locabus/*.h are C headers that
# C++ compiles unchanged.)
function(locabus_strict_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wshadow
                                           $<$<COMPILE_LANGUAGE:CXX>:-Wnon-virtual-dtor>)
endfunction()
