# The part of the PCRE2 (8-bit) API that logfwd/_pcre.pyx uses; see pcre2api(3).
from libc.stdint cimport uint32_t, uint8_t

cdef extern from *:
    """
    #define PCRE2_CODE_UNIT_WIDTH 8
    """

cdef extern from "pcre2.h" nogil:
    ctypedef struct pcre2_code_8:
        pass
    ctypedef struct pcre2_match_data_8:
        pass
    ctypedef struct pcre2_general_context_8:
        pass
    ctypedef struct pcre2_compile_context_8:
        pass
    ctypedef struct pcre2_match_context_8:
        pass
    ctypedef struct pcre2_jit_stack_8:
        pass
    ctypedef size_t PCRE2_SIZE
    ctypedef pcre2_jit_stack_8* (*pcre2_jit_callback_8)(void*)
    ctypedef const unsigned char* PCRE2_SPTR8

    uint32_t PCRE2_UTF, PCRE2_UCP, PCRE2_MULTILINE, PCRE2_CASELESS, PCRE2_DOTALL, PCRE2_EXTENDED
    uint32_t PCRE2_NO_UTF_CHECK, PCRE2_JIT_COMPLETE, PCRE2_NEVER_BACKSLASH_C
    uint32_t PCRE2_INFO_NAMECOUNT, PCRE2_INFO_NAMEENTRYSIZE, PCRE2_INFO_NAMETABLE, PCRE2_INFO_CAPTURECOUNT
    uint32_t PCRE2_INFO_JITSIZE
    int PCRE2_ERROR_NOMATCH
    PCRE2_SIZE PCRE2_UNSET
    PCRE2_SIZE PCRE2_ZERO_TERMINATED

    pcre2_code_8* pcre2_compile_8(PCRE2_SPTR8 pattern, PCRE2_SIZE length, uint32_t options, int* errorcode,
                                  PCRE2_SIZE* erroroffset, pcre2_compile_context_8* ccontext)
    void pcre2_code_free_8(pcre2_code_8* code)
    int pcre2_jit_compile_8(pcre2_code_8* code, uint32_t options)
    int pcre2_pattern_info_8(const pcre2_code_8* code, uint32_t what, void* where)
    pcre2_match_data_8* pcre2_match_data_create_from_pattern_8(const pcre2_code_8* code,
                                                               pcre2_general_context_8* gcontext)
    void pcre2_match_data_free_8(pcre2_match_data_8* match_data)
    PCRE2_SIZE* pcre2_get_ovector_pointer_8(pcre2_match_data_8* match_data)
    int pcre2_jit_match_8(const pcre2_code_8* code, PCRE2_SPTR8 subject, PCRE2_SIZE length, PCRE2_SIZE startoffset,
                          uint32_t options, pcre2_match_data_8* match_data, pcre2_match_context_8* mcontext)
    int pcre2_match_8(const pcre2_code_8* code, PCRE2_SPTR8 subject, PCRE2_SIZE length, PCRE2_SIZE startoffset,
                      uint32_t options, pcre2_match_data_8* match_data, pcre2_match_context_8* mcontext)
    int pcre2_get_error_message_8(int errorcode, unsigned char* buffer, PCRE2_SIZE bufflen)
    pcre2_match_context_8* pcre2_match_context_create_8(pcre2_general_context_8* gcontext)
    void pcre2_match_context_free_8(pcre2_match_context_8* mcontext)
    pcre2_jit_stack_8* pcre2_jit_stack_create_8(PCRE2_SIZE startsize, PCRE2_SIZE maxsize,
                                                pcre2_general_context_8* gcontext)
    void pcre2_jit_stack_free_8(pcre2_jit_stack_8* jit_stack)
    void pcre2_jit_stack_assign_8(pcre2_match_context_8* mcontext, pcre2_jit_callback_8 callback, void* callback_data)
