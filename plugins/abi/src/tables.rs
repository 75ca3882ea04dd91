//! Reading a plugin's tables no further than their `struct_size`.
//!
//! A plugin built against an older minor version has shorter tables: the
//! entries appended since are simply not there. The host reads required
//! entries only after checking the table reaches them, and optional entries
//! as absent when it does not.

use std::mem::{offset_of, size_of};
use std::ptr::addr_of;

use crate::types::{KilnBackendRegistration, KilnDeviceVtable, KilnHostApi};

/// Whether a table of `struct_size` bytes holds the field at `offset` of `size` bytes.
pub const fn covers(struct_size: u32, offset: usize, size: usize) -> bool {
    struct_size as usize >= offset + size
}

/// Bytes of a device table up to and including its last required entry
/// (`execute`): the shortest table any 1.x plugin may hand over.
pub const DEVICE_TABLE_REQUIRED_SIZE: usize =
    offset_of!(KilnDeviceVtable, execute) + size_of::<usize>();

/// Bytes of a registration up to and including `last_error`.
pub const REGISTRATION_REQUIRED_SIZE: usize =
    offset_of!(KilnBackendRegistration, last_error) + size_of::<usize>();

/// Copy a plugin's device table; entries past its `struct_size` read as
/// absent. Fails when the table lacks a required entry.
///
/// # Safety
/// `raw` must point to a device table valid for at least its `struct_size` bytes.
pub unsafe fn read_device_table(raw: *const KilnDeviceVtable) -> Result<KilnDeviceVtable, String> {
    // SAFETY: `struct_size` is the first field of every table.
    let size = unsafe { addr_of!((*raw).struct_size).read() };
    if (size as usize) < DEVICE_TABLE_REQUIRED_SIZE {
        return Err(format!(
            "the device table is {size} bytes, shorter than the {DEVICE_TABLE_REQUIRED_SIZE} bytes of its required entries"
        ));
    }
    macro_rules! optional {
        ($field:ident) => {
            if covers(
                size,
                offset_of!(KilnDeviceVtable, $field),
                size_of::<usize>(),
            ) {
                // SAFETY: the plugin's table reaches this entry.
                unsafe { addr_of!((*raw).$field).read() }
            } else {
                None
            }
        };
    }
    let (graph_begin, graph_end, graph_launch, graph_destroy) = (
        optional!(graph_begin),
        optional!(graph_end),
        optional!(graph_launch),
        optional!(graph_destroy),
    );
    // SAFETY: every entry read below lies within the required size checked above.
    unsafe {
        Ok(KilnDeviceVtable {
            struct_size: size,
            close: addr_of!((*raw).close).read(),
            memory_info: addr_of!((*raw).memory_info).read(),
            alloc_buffer: addr_of!((*raw).alloc_buffer).read(),
            free_buffer: addr_of!((*raw).free_buffer).read(),
            write_buffer: addr_of!((*raw).write_buffer).read(),
            read_buffer: addr_of!((*raw).read_buffer).read(),
            copy_buffer: addr_of!((*raw).copy_buffer).read(),
            synchronize: addr_of!((*raw).synchronize).read(),
            prepare_weight: addr_of!((*raw).prepare_weight).read(),
            release_weight: addr_of!((*raw).release_weight).read(),
            supports: addr_of!((*raw).supports).read(),
            execute: addr_of!((*raw).execute).read(),
            graph_begin,
            graph_end,
            graph_launch,
            graph_destroy,
        })
    }
}

/// The registration's `get_proc_address`, when its table reaches it.
pub fn registration_proc_address(
    reg: &KilnBackendRegistration,
) -> Option<unsafe extern "C" fn(*const std::ffi::c_char) -> *const std::ffi::c_void> {
    let reaches = covers(
        reg.struct_size,
        offset_of!(KilnBackendRegistration, get_proc_address),
        size_of::<usize>(),
    );
    if reaches {
        // SAFETY: the plugin's registration reaches this entry.
        unsafe { addr_of!(reg.get_proc_address).read() }
    } else {
        None
    }
}

/// The host's `log` entry, when the host table reaches it (plugin side).
pub fn host_log(
    host: &KilnHostApi,
) -> Option<unsafe extern "C" fn(i32, *const std::ffi::c_char, *const std::ffi::c_char)> {
    if covers(
        host.struct_size,
        offset_of!(KilnHostApi, log),
        size_of::<usize>(),
    ) {
        // SAFETY: the host's table reaches this entry.
        unsafe { addr_of!(host.log).read() }
    } else {
        None
    }
}
