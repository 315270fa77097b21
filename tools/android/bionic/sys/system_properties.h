// The bionic declarations librustutils' bindgen wrapper (system/librustutils/bindgen/
// system_properties.h) includes: the public system-property API of the NDK's
// <sys/system_properties.h>, which glibc lacks. Declarations only, written for this check;
// on a device bionic's own header and libc.so provide them.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef struct prop_info prop_info;

const prop_info* __system_property_find(const char* name);
void __system_property_read_callback(const prop_info* pi,
                                     void (*callback)(void* cookie, const char* name,
                                                      const char* value, uint32_t serial),
                                     void* cookie);
int __system_property_foreach(void (*propfn)(const prop_info* pi, void* cookie), void* cookie);
int __system_property_set(const char* name, const char* value);
bool __system_property_wait(const prop_info* pi, uint32_t old_serial, uint32_t* new_serial_ptr,
                            const struct timespec* relative_timeout);
