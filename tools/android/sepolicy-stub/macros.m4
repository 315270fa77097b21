divert(-1)
# Permission sets (global_macros).
define(`x_file_perms', `{ getattr execute execute_no_trans map }')
define(`r_file_perms', `{ getattr open read ioctl lock map watch watch_reads }')
define(`w_file_perms', `{ open append write lock map }')
define(`rw_file_perms', `{ r_file_perms w_file_perms }')
define(`r_dir_perms', `{ open getattr read search ioctl lock watch watch_reads }')
define(`global_capability_class_set', `{ capability cap_userns }')

# Build-variant switch (te_macros).
define(`userdebug_or_eng', ifelse(target_build_variant, `user', , `$1'))

# Domain transitions (te_macros).
define(`domain_trans', `
allow $1 $2:file { getattr open read execute map };
allow $1 $3:process transition;
allow $3 $2:file { entrypoint open read execute getattr map };
allow $3 $1:process sigchld;
dontaudit $1 $3:process noatsecure;
allow $1 $3:process { siginh rlimitinh };
')
define(`domain_auto_trans', `
domain_trans($1,$2,$3)
type_transition $1 $2:process $3;
')
define(`init_daemon_domain', `
domain_auto_trans(init, $1_exec, $1)
')

# Binder (te_macros).
define(`binder_call', `
allow $1 $2:binder { call transfer };
allow $2 $1:binder transfer;
allow $1 $2:fd use;
')

# HALs (te_macros).
define(`hal_attribute', `
attribute hal_$1;
attribute hal_$1_client;
attribute hal_$1_server;
neverallow { hal_$1_server -halserverdomain } domain:process fork;
')
define(`hal_server_domain', `
typeattribute $1 halserverdomain;
typeattribute $1 $2_server;
typeattribute $1 $2;
')
define(`hal_client_domain', `
typeattribute $1 halclientdomain;
typeattribute $1 $2_client;
')
define(`add_service', `
allow $1 $2:service_manager { add find };
neverallow { domain -$1 } $2:service_manager add;
')
define(`hal_attribute_service', `
allow $1_client $2:service_manager find;
add_service($1_server, $2)
')

# Properties (te_macros): the type and its attributes; the Treble neverallow of
# vendor_internal_prop (no core domain but init and dumpstate reads it).
define(`get_prop', `
allow $1 $2:file { getattr open read map };
')
define(`vendor_internal_prop', `
type $1, property_type, vendor_property_type, vendor_internal_property_type;
neverallow { coredomain -init } $1:file { open read write append };
')

# Files and memory (te_macros).
define(`tmpfs_domain', `
type_transition $1 tmpfs:file $1_tmpfs;
allow $1 $1_tmpfs:file { read write getattr map ioctl };
')
define(`io_uring_use', `
type $1_iouring;
type_transition $1 $1:anon_inode $1_iouring "[io_uring]";
allow $1 $1_iouring:anon_inode { create map read write };
allow $1 self:io_uring sqpoll;
neverallow { domain -$1 } $1_iouring:anon_inode *;
dontaudit $1 self:global_capability_class_set ipc_lock;
')
divert(0)dnl
